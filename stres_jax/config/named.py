"""`--config NAME`: a config shipped in `stres_jax/configs/`, or a path; a file in the working
folder wins over a packaged one of the same name."""
import os
from pathlib import Path

from stres_jax.errors import UserError

PACKAGED = Path(__file__).resolve().parent.parent / "configs"


def packaged_names():
    return sorted(p.stem for p in PACKAGED.glob("*.py") if not p.name.startswith("_"))


def resolve(value):
    """(path to load, a line saying which was used or None) for a --config value ("r2plus1d",
    "r2plus1d.py", "configs/r2plus1d.py", "/abs/x.py"); an unknown one is a UserError."""
    if os.path.isfile(value):
        if os.sep in value or not (PACKAGED / Path(value).name).is_file():
            return value, None
        return value, f"config {value} from the working folder (not the packaged one)"
    name = Path(value).stem if value.endswith(".py") else value
    if os.sep not in value or Path(value).parent.name == "configs":
        local = Path(f"{name}.py")
        if local.is_file():
            return str(local), f"config {local} from the working folder (not the packaged one)"
        if name in packaged_names():
            return str(PACKAGED / f"{name}.py"), f"config {value}: the packaged {PACKAGED / name}.py"
    raise UserError(f"--config {value}: no such file and no packaged config of that name; "
                    f"packaged: {', '.join(packaged_names())} (or pass a path)")
