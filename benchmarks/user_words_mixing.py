"""Choose how completions mix the model's words with the user's: keystroke savings over a grid of settings.

    python benchmarks/user_words_mixing.py MODEL --text FILE [--limit N]

Types FILE (normalized like eval-complete) with a dictionary that starts empty and learns as it goes
(compact_lm.complete_eval.simulate_typing), once without learning and once per setting:
- the rule in compact_lm/user_words.py, a constant share of the probability for the dictionary's words
  whenever one continues the prefix, over shares and half-lives;
- a share that grows with the evidence, W_p / (W_p + prior), W_p the weight of the words continuing the
  prefix (the more the user typed such words, the more they count).
Prints savings and the p50 keystroke latency of each. Choose the settings on a text the bar is not
measured on (the test split here; the bar uses the validation split).
"""
from __future__ import annotations

import argparse
import time

from common import blas_description

from compact_lm.autocomplete import Autocompleter
from compact_lm.complete_eval import simulate_typing
from compact_lm.opener import open_model
from compact_lm.user_words import UserWords


class EvidenceShare(UserWords):
    """The alternative rule: share = W_p / (W_p + prior)."""

    def __init__(self, prior: float, **options):
        super().__init__(**options)
        self.prior = prior

    def continuing(self, prefix: str, k: int):
        found, _ = super().continuing(prefix, k)
        if not found:
            return found, 0.0
        weight = self.total_weight(prefix)
        return found, weight / (weight + self.prior)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--text", required=True)
    parser.add_argument("--limit", type=int, default=None, help="type only the first N characters")
    parser.add_argument("--shares", default="0.1,0.2,0.3")
    parser.add_argument("--half-lives", default="300,2000,20000")
    parser.add_argument("--priors", default="10,30,100", help="of the evidence rule, at each half-life")
    args = parser.parse_args()
    text = open(args.text, encoding="utf-8").read()[:args.limit]
    backend = open_model(args.model).backend()
    print(blas_description())
    print(f"{args.model}, {len(text):,} characters of {args.text}, top-3")

    def run(label: str, user_words) -> float:
        started = time.perf_counter()
        report = simulate_typing(Autocompleter(backend, user_words=user_words), text, 3)
        print(f"{label:<40} savings {report.keystroke_savings:7.2%}   p50 {report.latency_ms['p50']:.3f} ms"
              f"   ({time.perf_counter() - started:.0f} s)", flush=True)
        return report.keystroke_savings

    run("learning off", None)
    for half_life in [float(h) for h in args.half_lives.split(",") if h]:
        for share in [float(c) for c in args.shares.split(",") if c]:
            run(f"share {share:g}, half-life {half_life:g}", UserWords(share=share, half_life=half_life))
        for prior in [float(p) for p in args.priors.split(",") if p]:
            run(f"share W/(W + {prior:g}), half-life {half_life:g}", EvidenceShare(prior, half_life=half_life))


if __name__ == "__main__":
    main()
