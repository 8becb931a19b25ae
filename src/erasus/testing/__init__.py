"""Tools for testing unlearning code and verification set-ups: a gallery of cheating models
that every verification entry point must fail (:mod:`erasus.testing.cheats`)."""
from .cheats import CHEATS, ForgetLookup, cheat_gallery, hidden_class, reinitialised, temperature_class, zeroed_row
from .gallery import ENTRY_POINTS, judge_gallery

__all__ = ["CHEATS", "ENTRY_POINTS", "judge_gallery", "ForgetLookup", "cheat_gallery", "hidden_class", "reinitialised", "temperature_class",
           "zeroed_row"]
