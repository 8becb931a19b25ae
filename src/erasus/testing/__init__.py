"""Tools for testing unlearning code and verification set-ups: the conformance checks plugin
authors import (:mod:`erasus.testing.checks`: ``check_strategy``, ``check_selector``,
``check_metric``) and a gallery of cheating models that every verification entry point must
fail (:mod:`erasus.testing.cheats`)."""
from .cheats import CHEATS, ForgetLookup, cheat_gallery, hidden_class, reinitialised, temperature_class, zeroed_row
from .checks import check_metric, check_selector, check_strategy, tiny_problem
from .gallery import ENTRY_POINTS, judge_gallery

__all__ = ["CHEATS", "ENTRY_POINTS", "judge_gallery", "ForgetLookup", "cheat_gallery", "check_metric",
           "check_selector", "check_strategy", "hidden_class", "reinitialised", "temperature_class", "tiny_problem",
           "zeroed_row"]
