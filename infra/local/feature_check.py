#!/usr/bin/env python3
"""Checks that every cargo selection the scripts and tests build resolves the same features.

Cargo (resolver 2 and 3) unifies features over the packages one command selects. When two
commands select different packages, a dependency can get two feature sets and is compiled twice,
with everything above it: before this check a fresh clone's target/ held four copies of the AWS
SDK and reached 12 GB. The selections below are the ones `infra/test.sh`, `infra/demo.sh`,
`infra/local/lib.sh` (`pec_build_binaries`) and `tests/src/lib.rs` (`Binaries::build`) use; each
must resolve every package with the features `cargo test --workspace` gives it.

When it fails: a new dependency or feature made a selection differ. For a third-party crate run
`cargo hakari generate` (cargo install cargo-hakari; shared/workspace-hack); for a workspace crate
turn the same feature on in tests/Cargo.toml.

    python3 infra/local/feature_check.py
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# (name, cargo tree arguments, the dependency kinds that command builds)
SELECTIONS = [
    ("cargo test --workspace --exclude pec-integration",
     ["--workspace", "--exclude", "pec-integration"], "normal,dev,build"),
    ("cargo test -p pec-integration", ["-p", "pec-integration"], "normal,dev,build"),
    ("Binaries::build (tests/src/lib.rs)",
     ["-p", "pec-cli", "-p", "pec-runner", "-p", "pec-integration"], "normal,build"),
    ("pec_build_binaries (infra/local/lib.sh)",
     ["-p", "pec-cli", "-p", "pec-runner", "-p", "pec-exchange", "-p", "pec-integration",
      "-p", "pec-members"], "normal,dev,build"),
]


def features(args, edges):
    """Package (name, version, source) -> the set of feature lists cargo tree prints for it."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", *args, "-e", edges, "--prefix", "none",
         "-f", "{p}\t{f}"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        line = line.replace(" (*)", "")
        if "\t" not in line:
            continue
        package, feats = line.split("\t", 1)
        found.setdefault(package.strip(), set()).add(feats.strip())
    return found


def main():
    reference = features(["--workspace"], "normal,dev,build")
    failures = 0
    for name, args, edges in SELECTIONS:
        got = features(args, edges)
        differ = [(p, reference[p], got[p]) for p in sorted(got)
                  if p in reference and got[p] != reference[p]]
        if differ:
            failures += 1
            print(f"{name}: {len(differ)} package(s) resolve other features than "
                  "`cargo test --workspace`, so they and everything above them compile twice:")
            for package, want, have in differ:
                print(f"  {package}: workspace {sorted(want)}, here {sorted(have)}")
        else:
            print(f"{name}: the workspace's features ({len(got)} packages)")
    if failures:
        print("\nfix: `cargo hakari generate` for third-party crates (shared/workspace-hack); for a "
              "workspace crate, the same feature in tests/Cargo.toml", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
