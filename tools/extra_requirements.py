"""Print the requirements of fastnn and of the extras named, one a line, for pip -r.

    python tools/extra_requirements.py test dev > reqs.txt && pip install -r reqs.txt

The extras' references to fastnn-mlp itself ("fastnn-mlp[sklearn,onnx]") are followed,
so the list holds everything the extras bring in except fastnn. .ci/run installs it
to run the lint, type and docs checks before fastnn is built.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"
]
SELF = re.compile(rf"^{re.escape(project['name'])}\[([^\]]+)\]\s*$")
extras = project["optional-dependencies"]


def requirements(names, seen):
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        for req in extras[name]:
            m = SELF.match(req)
            if m:
                yield from requirements([e.strip() for e in m.group(1).split(",")], seen)
            else:
                yield req


out = list(project["dependencies"])
out += requirements(sys.argv[1:], set())
print("\n".join(dict.fromkeys(out)))
