"""Checks that the README's API tour is examples/tour.cpp, so the tour always compiles."""
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()
tour = (root / "examples" / "tour.cpp").read_text().strip()
start = readme.find("```cpp\n")
end = readme.find("```", start + 7)
if start < 0 or readme[start + 7 : end].strip() != tour:
    sys.exit("README.md's first ```cpp block differs from examples/tour.cpp; copy it over")
