"""Load a config file as ml_collections' --config flag does: by path, not as a module of a package."""
import importlib.util


def load_config_file(path, *args):
    spec = importlib.util.spec_from_file_location(f"config_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)
