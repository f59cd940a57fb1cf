"""The config schema (`base.get_base_config`) and the checks every run makes before it starts."""
