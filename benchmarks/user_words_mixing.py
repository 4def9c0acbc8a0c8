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

import math

from compact_lm.autocomplete import Autocompleter, Session
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


class NotAtBoundary(UserWords):
    """The rule with no share at a boundary (the next word is the model's alone)."""

    def continuing(self, prefix: str, k: int):
        found, share = super().continuing(prefix, k)
        return (found, share) if prefix else ([], 0.0)


class PrefixEvidence(UserWords):
    """A cache model conditioned on what is typed of the word (Kuhn & De Mori's unigram cache):
        p(w | p) proportional to (1 - lam) p_model(p) p_model(w | p) + lam weight(w) / W,
    p_model(p) the model's probability of the typed part of the word (`prefix_log_prob`, set by
    `with_prefix_evidence`), W the weight of all the words. In the mixing API: share =
    a / (a + b), a = lam W_p / W, b = (1 - lam) p_model(p)."""

    prefix_log_prob = 0.0

    def __init__(self, lam: float, **options):
        super().__init__(**options)
        self.lam = lam

    def continuing(self, prefix: str, k: int):
        found, _ = super().continuing(prefix, k)
        if not found:
            return found, 0.0
        a = self.lam * self.total_weight(prefix) / self.total_weight("")
        b = (1.0 - self.lam) * math.exp(self.prefix_log_prob)
        return found, a / (a + b)


def with_prefix_evidence() -> None:
    """Make Session.suggestions tell a PrefixEvidence dictionary the model's log p of the typed part of the word."""
    original = Session.suggestions

    def suggestions(self, k=3, max_chars=None):
        if isinstance(self.user_words, PrefixEvidence):
            chars, completer = self._chars, self.completer
            begin = len(chars)
            while begin > 0 and not completer.is_boundary(chars[begin - 1]):
                begin -= 1
            at = {length: log_probs for length, _, log_probs in self._stack}
            total = 0.0
            for i in range(begin, len(chars)):
                ids = completer._ids_of_char(chars[i])
                if i in at and len(ids) == 1:
                    total += float(at[i][int(ids[0])])
            self.user_words.prefix_log_prob = total
        return original(self, k, max_chars)

    Session.suggestions = suggestions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--text", required=True)
    parser.add_argument("--limit", type=int, default=None, help="type only the first N characters")
    parser.add_argument("--shares", default="0.1,0.2,0.3")
    parser.add_argument("--half-lives", default="300,2000,20000")
    parser.add_argument("--priors", default="10,30,100", help="of the evidence rule, at each half-life")
    parser.add_argument("--lams", default="0.02,0.05,0.1,0.2", help="of the prefix-evidence cache, at each half-life")
    args = parser.parse_args()
    with_prefix_evidence()
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
        for share in [float(c) for c in args.shares.split(",") if c]:
            run(f"share {share:g} but none at a boundary, half-life {half_life:g}",
                NotAtBoundary(share=share, half_life=half_life))
        for lam in [float(c) for c in args.lams.split(",") if c]:
            run(f"cache lam {lam:g} given p_model(prefix), half-life {half_life:g}", PrefixEvidence(lam, half_life=half_life))


if __name__ == "__main__":
    main()
