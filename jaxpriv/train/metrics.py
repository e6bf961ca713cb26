"""Metrics as JSON lines: one object per evaluation, appended and flushed."""

import json
import os


class JsonlWriter:
    """Appends dicts to ``path`` as JSON lines (the file survives interrupts line by line)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path

    def drop_after(self, step: int) -> None:
        """Removes the records of steps after ``step`` (a resumed run writes them again)."""
        if os.path.exists(self.path):
            kept = [r for r in read_jsonl(self.path) if r["step"] <= step]
            temporary = f"{self.path}.partial"
            with open(temporary, "w") as f:
                f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            os.replace(temporary, self.path)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
