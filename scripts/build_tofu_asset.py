"""Pack the TOFU files into the package (``src/erasus/data/assets/tofu.json.gz``).

TOFU (Maini et al., 2024; MIT licence, provenance in ``src/erasus/data/assets/TOFU_SOURCE.md``)
ships with Erasus so that ``load_tofu`` works on a fresh install without network access or a
data folder. Only the files that are not slices of others are stored: ``full``,
``holdout10``, ``forget10_perturbed``, ``retain_perturbed``, the real-authors and world-facts
files and the refusal answers; ``load_tofu`` derives ``forgetXX`` (the last authors of
``full``), ``retainYY`` (the others), ``holdoutXX`` and ``forgetXX_perturbed`` (their first /
last records), and this script checks that every derived split equals its original file.

    python scripts/build_tofu_asset.py --src ../shared/data/tofu
"""
import argparse
import gzip
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
STORED = ("full", "holdout10", "forget10_perturbed", "retain_perturbed", "real_authors", "real_authors_perturbed",
          "world_facts", "world_facts_perturbed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(HERE.parent / "shared" / "data" / "tofu"))
    ap.add_argument("--out", default=str(HERE / "src" / "erasus" / "data" / "assets"))
    args = ap.parse_args()
    src, out = Path(args.src), Path(args.out)
    bundle = {name: json.loads((src / f"{name}.json").read_text(encoding="utf-8")) for name in STORED}
    bundle["idontknow"] = [line.strip() for line in (src / "idontknow.jsonl").read_text(encoding="utf-8").splitlines()
                           if line.strip()]
    path = out / "tofu.json.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(bundle, fh, ensure_ascii=False, separators=(",", ":"))
    shutil.copyfile(src / "SOURCE.md", out / "TOFU_SOURCE.md")
    # every split the loader derives must equal its original file
    from erasus.data.datasets.tofu import SPLITS, load_tofu

    for split in SPLITS:
        f = src / f"{split}.json"
        if f.exists():
            assert load_tofu(split, source="package").records == json.loads(f.read_text(encoding="utf-8")), split
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); every split equals its file in {src}")


if __name__ == "__main__":
    main()
