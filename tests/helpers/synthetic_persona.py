"""Synthetic persona JSONL for tests and demo runs (made up here: no third-party text).

Each persona is "<job> who loves <hobby> and lives in <place>."; its lines are templated
sentences that reuse those words, so a model can learn to copy from the persona segment.

    python -m tests.helpers.synthetic_persona OUT.jsonl [--lines 400] [--personas 40] [--turns]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

JOBS = ["sailor", "baker", "nurse", "pilot", "farmer", "teacher", "painter", "chemist",
        "librarian", "firefighter", "gardener", "tailor"]  # fmt: skip
HOBBIES = ["chess", "jazz", "hiking", "knitting", "surfing", "astronomy", "cooking",
           "birdwatching", "poetry", "cycling"]  # fmt: skip
PLACES = ["lisbon", "oslo", "kyoto", "denver", "nairobi", "quebec", "perth", "dublin"]
TEMPLATES = [
    "as a {job}, i spend my weekends on {hobby}.",
    "{place} is where i work as a {job}, and i love it.",
    "nothing beats {hobby} after a long day as a {job}.",
    "people in {place} know me as the {job} who talks about {hobby}.",
    "i moved to {place} years ago and took up {hobby} there.",
    "being a {job} is hard work, but {hobby} keeps me calm.",
    "if you visit {place}, ask me about {hobby}.",
    "my friends say i am a {job} first and a {hobby} fan second.",
]
QUESTIONS = ["what do you do?", "where do you live?", "what do you like?", "tell me about you."]


def personas(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    combos = [(j, h, p) for j in JOBS for h in HOBBIES for p in PLACES]
    rng.shuffle(combos)
    return [
        {"job": j, "hobby": h, "place": p, "text": f"A {j} who loves {h} and lives in {p.title()}."}
        for j, h, p in combos[:n]
    ]


def rows(n_lines: int, n_personas: int, turns: bool = False, seed: int = 0) -> list[dict]:
    """`n_lines` form-A rows (or form-B rows with `turns`) spread evenly over `n_personas`."""
    rng = random.Random(seed)
    people = personas(n_personas, seed)
    out = []
    for i in range(n_lines):
        p = people[i % len(people)]
        reply = rng.choice(TEMPLATES).format(**p)
        if turns:
            out.append({"persona": p["text"], "turns": [rng.choice(QUESTIONS), reply]})
        else:
            out.append({"input persona": p["text"], "synthesized text": reply, "id": i})
    return out


def write_persona_jsonl(
    path: str | Path, n_lines: int = 400, n_personas: int = 40, turns: bool = False, seed: int = 0
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows(n_lines, n_personas, turns, seed)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--personas", type=int, default=40)
    parser.add_argument("--turns", action="store_true", help="multi-turn form B rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_persona_jsonl(args.out, args.lines, args.personas, args.turns, args.seed))
