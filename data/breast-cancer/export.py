"""Write breast-cancer.csv from scikit-learn's bundled copy (no network needed).

Run from the repository root: .venv/bin/python data/breast-cancer/export.py
"""

import csv
from pathlib import Path

from sklearn.datasets import load_breast_cancer

OUT = Path(__file__).resolve().parent / "breast-cancer.csv"


def main() -> None:
    data = load_breast_cancer()
    columns = [str(name).replace(" ", "_") for name in data.feature_names]
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*columns, "malignant"])
        for row, target in zip(data.data, data.target, strict=True):
            # scikit-learn codes malignant as 0 and benign as 1; here malignant = 1.
            writer.writerow([*(repr(float(v)) for v in row), int(target == 0)])
    print(f"wrote {len(data.target)} rows to {OUT}")


if __name__ == "__main__":
    main()
