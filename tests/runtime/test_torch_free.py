"""The ONNX Runtime path needs no torch: tools/setup_serve.sh builds .venv-serve without it (~750 MB
less), so `resq_export.runtime.load(<ONNX folder>)`, generation and the served model's imports must
not import it."""

import json
import os
import subprocess
import sys

from resq_export.runtime import load

# torch is installed in the project's .venv, and transformers imports it whenever it is there; so the
# child process hides it as an environment without torch does: None in sys.modules makes `import torch`
# fail and importlib.util.find_spec("torch") (transformers' check) answer "absent"
_CHILD = """
import json, sys
sys.modules["torch"] = None
import resq_export.serve.triton_model  # the served model's module (Triton's stub imports it)
from resq_export.runtime import load
model = load(sys.argv[1])
text = "".join(model.stream(sys.argv[2], max_new_tokens=8))
print(json.dumps({"text": text}))
"""


def test_onnx_folder_loads_and_generates_without_torch(onnx_dir):
    prompt = "Once upon a time the history of"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(onnx_dir), prompt], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # an `import torch` on the way fails the child
    # the same text as this process gives with torch importable
    assert json.loads(done.stdout.splitlines()[-1])["text"] == "".join(load(onnx_dir).stream(prompt, max_new_tokens=8))
