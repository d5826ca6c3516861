"""Cross-matching a run's catalogue with known lenses, and how many of them the run recovered.

The reference is lenscat (Vujeva et al. 2024; ``pip install lenscat``): a community
catalogue of ~32,800 known lenses and lens candidates, shipped as a CSV file inside the
package. Only that file is read; lenscat itself is not imported, because importing it
pulls in ligo.skymap, which this code does not need (``pip install --no-deps lenscat``
is enough; ``requirements/known-lenses.txt`` holds the supported versions).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from packaging.specifiers import SpecifierSet

from catalogs.healpix import coverage, in_coverage, pixel_area_deg2

#: lenscat's column names -> ours.
LENSCAT_COLUMNS = {"name": "name", "RA [deg]": "ra", "DEC [deg]": "dec", "zlens": "zlens", "type": "type",
                   "grading": "grade", "ref": "ref"}
DEFAULT_RADIUS_ARCSEC = 2.0
#: lenscat releases whose catalogue file (data/catalog.csv, the columns above) this module reads;
#: the same bound as requirements/known-lenses.txt.
LENSCAT_VERSIONS = ">=1.1,<2"
#: HEALPix order of the footprint map: pixels of ~0.012 deg^2 (6.9 arcmin across), which a
#: survey catalogue of galaxies fills densely; use a lower order for a sparse catalogue.
DEFAULT_FOOTPRINT_ORDER = 9


def lenscat_csv() -> Path:
    """Path of the catalogue CSV shipped with the installed lenscat package.

    Raises:
        ModuleNotFoundError: lenscat is not installed.
        ImportError: the installed lenscat is not a version in :data:`LENSCAT_VERSIONS`.
        FileNotFoundError: this lenscat version keeps its catalogue elsewhere.
    """
    # find_spec locates the package without running its __init__ (which needs ligo.skymap).
    spec = importlib.util.find_spec("lenscat")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the known-lens catalogue comes from the lenscat package: `pip install --no-deps 'lenscat{LENSCAT_VERSIONS}'`, "
            "or pass the path of a CSV with name, RA [deg], DEC [deg], grading columns")
    installed = lenscat_version()
    if installed is not None and not SpecifierSet(LENSCAT_VERSIONS).contains(installed, prereleases=True):
        raise ImportError(
            f"lenscat {installed} is installed, but lensfinder reads the catalogue of lenscat{LENSCAT_VERSIONS}: "
            "`pip install --no-deps -r requirements/known-lenses.txt`, or pass the path of a CSV in its format")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "catalog.csv"
    if not path.is_file():
        raise FileNotFoundError(f"lenscat is installed but has no {path}; pass the catalogue's path explicitly")
    return path


def lenscat_version() -> str | None:
    """The installed lenscat's version (from its distribution metadata), or None."""
    try:
        return importlib.metadata.version("lenscat")
    except importlib.metadata.PackageNotFoundError:
        return None


def load_known_lenses(path: str | Path | None = None) -> pd.DataFrame:
    """Known lenses as a frame with ``name``, ``ra``, ``dec`` (deg, ICRS), ``grade`` and lenscat's
    other columns (``zlens``, ``type``, ``ref``) where present.

    Args:
        path: a lenscat-format CSV; default: the one shipped with the installed lenscat.
    """
    frame = pd.read_csv(lenscat_csv() if path is None else path)
    frame.attrs["source"] = f"lenscat {lenscat_version()}" if path is None else str(path)
    frame = frame.rename(columns={old: new for old, new in LENSCAT_COLUMNS.items() if old in frame})
    missing = {"name", "ra", "dec", "grade"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path or 'lenscat'} lacks the column(s) {sorted(missing)} (lenscat names: "
                         "name, RA [deg], DEC [deg], grading)")
    frame["ra"] = frame["ra"].astype(np.float64)
    frame["dec"] = frame["dec"].astype(np.float64)
    return frame.reset_index(drop=True)


def _nearest(ra: np.ndarray, dec: np.ndarray, ra_other: np.ndarray, dec_other: np.ndarray,
             radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """For each (ra, dec): index of the nearest other position and its separation in arcsec,
    or -1 and NaN where none lies within ``radius_arcsec``. Vectorised (a k-d tree)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    index = np.full(len(ra), -1, dtype=np.int64)
    separation = np.full(len(ra), np.nan)
    if len(ra) == 0 or len(ra_other) == 0:
        return index, separation
    found, angle, _ = match_coordinates_sky(SkyCoord(ra, dec, unit=u.deg), SkyCoord(ra_other, dec_other, unit=u.deg))
    angle_arcsec = angle.to_value(u.arcsec)
    close = angle_arcsec <= radius_arcsec
    index[close] = found[close]
    separation[close] = angle_arcsec[close]
    return index, separation


def crossmatch(candidates: pd.DataFrame, known: pd.DataFrame, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
               ) -> pd.DataFrame:
    """``candidates`` with the nearest known lens within ``radius_arcsec`` of each row.

    Adds ``known_lens_name``, ``known_lens_grade`` and ``known_lens_separation_arcsec``
    (null where no known lens is that close); the input frame is not modified.
    """
    if radius_arcsec <= 0:
        raise ValueError("radius_arcsec must be positive")
    index, separation = _nearest(candidates["ra"].to_numpy(np.float64), candidates["dec"].to_numpy(np.float64),
                                 known["ra"].to_numpy(np.float64), known["dec"].to_numpy(np.float64), radius_arcsec)
    matched = index >= 0
    names = np.full(len(candidates), None, dtype=object)
    grades = np.full(len(candidates), None, dtype=object)
    names[matched] = known["name"].astype(str).to_numpy()[index[matched]]
    grades[matched] = known["grade"].astype(str).to_numpy()[index[matched]]
    out = candidates.copy()
    out["known_lens_name"] = pd.Series(names, index=candidates.index, dtype=object)
    out["known_lens_grade"] = pd.Series(grades, index=candidates.index, dtype=object)
    out["known_lens_separation_arcsec"] = pd.Series(separation, index=candidates.index)
    return out


@dataclass
class KnownLensReport:
    """How the run did on the known lenses that fall in its footprint."""

    in_footprint: int  # known lenses in the HEALPix coverage map of the catalogue positions
    matched: int  # of those, within the radius of a scored object
    above_threshold: int  # of those, matched to an object with score >= threshold
    threshold: float
    radius_arcsec: float
    footprint_order: int
    footprint_area_deg2: float
    by_grade: dict[str, dict[str, int]] = field(default_factory=dict)  # the three counts per grade
    recovered: list[str] = field(default_factory=list)  # names of the known lenses above threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def known_lens_report(
    candidates: pd.DataFrame,
    known: pd.DataFrame,
    threshold: float,
    *,
    score_column: str = "score",
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    footprint_order: int = DEFAULT_FOOTPRINT_ORDER,
) -> KnownLensReport:
    """Count the known lenses inside the run's footprint, matched, and scored above ``threshold``.

    The footprint is the set of HEALPix pixels of ``footprint_order`` that hold at least
    one scored object — simple and tile-agnostic, exact up to the pixel size at the edges.
    A known lens counts as recovered when its nearest scored object within
    ``radius_arcsec`` has ``score_column >= threshold``.
    """
    pixels = coverage(candidates["ra"], candidates["dec"], footprint_order)
    inside = known[in_coverage(known["ra"], known["dec"], pixels, footprint_order)]
    index, _ = _nearest(inside["ra"].to_numpy(np.float64), inside["dec"].to_numpy(np.float64),
                        candidates["ra"].to_numpy(np.float64), candidates["dec"].to_numpy(np.float64), radius_arcsec)
    matched = index >= 0
    scores = candidates[score_column].to_numpy(np.float64)
    above = np.zeros(len(inside), dtype=bool)
    above[matched] = scores[index[matched]] >= threshold
    grades = inside["grade"].astype(str).to_numpy()
    by_grade = {grade: {"in_footprint": int((grades == grade).sum()),
                        "matched": int((matched & (grades == grade)).sum()),
                        "above_threshold": int((above & (grades == grade)).sum())}
                for grade in sorted(set(grades))}
    return KnownLensReport(
        in_footprint=len(inside), matched=int(matched.sum()), above_threshold=int(above.sum()),
        threshold=float(threshold), radius_arcsec=float(radius_arcsec), footprint_order=footprint_order,
        footprint_area_deg2=float(len(pixels) * pixel_area_deg2(footprint_order)), by_grade=by_grade,
        recovered=inside["name"].astype(str).to_numpy()[above].tolist(),
    )
