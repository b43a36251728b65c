"""``python -m compare.models MODEL OUT.json``: write a built-in model's derived tensor spec."""

import json
import sys

from compare.models import derive

if __name__ == "__main__":
    model, path = sys.argv[1:3]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(derive(model), f)
