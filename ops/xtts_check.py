"""`python -m ops.xtts_check [--fix]`: can this venv run XTTS v2 through coqui-tts?

PyPI's Linux torchaudio wheels are CUDA builds: their C++ extension (`torchaudio/lib/*.so`)
links libc10_cuda.so, which a CPU build of torch does not have, so `import torchaudio` fails
beside it. torchaudio imports as pure Python when that extension is absent (the case it
documents for pex deployments), and XTTS needs only its pure-Python parts (MelSpectrogram,
resample). With `--fix`, on a CPU torch, the extension files are removed; with a CUDA torch
nothing is touched. Then `import TTS` and the XTTS model class are imported as a check.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

IMPORT_TORCHAUDIO = "import torchaudio"
IMPORT_XTTS = (
    "import torch, torchaudio, transformers, TTS\n"
    "from TTS.tts.models.xtts import Xtts\n"
    "print(f'torch {torch.__version__} (cuda {torch.version.cuda}), torchaudio "
    "{torchaudio.__version__}, transformers {transformers.__version__}, coqui-tts "
    "{TTS.__version__}')"
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def torch_has_cuda() -> bool:
    out = run("import torch; print(torch.version.cuda or '')")
    return out.returncode == 0 and bool(out.stdout.strip())


def torchaudio_extension() -> list[Path]:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return sorted(lib.glob("*.so"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.xtts_check", description=__doc__.split("\n")[0])
    p.add_argument("--fix", action="store_true", help="drop torchaudio's CUDA extension on CPU")
    args = p.parse_args(argv)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("TTS") is None:
        print("xtts: coqui-tts or torch missing: sh ops/install.sh --xtts", file=sys.stderr)
        return 1
    ta = run(IMPORT_TORCHAUDIO)
    if ta.returncode != 0:
        reason = last_line(ta.stderr)
        cuda_linked = "cuda" in ta.stderr.lower() or "_torchaudio" in ta.stderr
        if not (args.fix and cuda_linked and not torch_has_cuda()):
            print(f"xtts: torchaudio does not import ({reason})", file=sys.stderr)
            return 1
        removed = torchaudio_extension()
        for so in removed:
            so.unlink()
        names = ", ".join(so.name for so in removed)
        print(f"xtts: CPU torch: removed torchaudio's CUDA-linked extension ({names})")
    check = run(IMPORT_XTTS)
    if check.returncode != 0:
        print(f"xtts: coqui-tts does not import ({last_line(check.stderr)})", file=sys.stderr)
        return 1
    print(f"xtts: ready: {check.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
