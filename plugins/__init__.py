"""slatframe's builtin plugins. Each module registers through the ``slatframe`` entry-point
group in pyproject.toml, exactly as a third-party plugin package would."""
