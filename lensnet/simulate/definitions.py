"""Physics definitions that every simulation engine shares: the truth a finder is judged by.

The two engines (:mod:`lensnet.simulate` on lenstronomy, :mod:`lensnet.simulate.galsim_engine`
on GalSim and caustics) share no rendering or population code. They share only what a
measurement must mean the same thing in both: the kinds of object, the survey profiles
(:mod:`lensnet.simulate.profiles`) and the visibility of the lensed light, computed here
from each engine's own noiseless lensed-source image:

``arc_snr``
    Lanusse et al. (2018, eq. 10): ``S/N = F_tot / (sigma * sqrt(N_pix))``, with ``sigma``
    the per-pixel noise, ``N_pix`` the pixels where the noiseless lensed-source image
    exceeds ``0.5 sigma`` and ``F_tot`` the lensed flux in them. Per band; the finder's
    figure is the best band.
``npix_arc_1sigma``
    Bom et al. (2022): pixels of the noiseless lensed-source image above ``1 sigma``.
``arc_azimuth_fraction``
    Share of the 36 ten-degree sectors around the lens centre that hold a pixel of the
    ``1 sigma`` segmentation farther than half an Einstein radius from the centre (nearer
    pixels lie in every sector): about 1 for a complete Einstein ring, 0.2-0.5 for a long
    arc or an Einstein cross, below 0.1 for a small single image. The sanity set selects
    complete rings, crosses and long arcs with it.

Correlated noise lowers the per-pixel sigma of a smoothed image but not the noise of a
sum over pixels; engines that correlate their noise pass the *per-pixel* sigma of the
final image, as a finder measures it.
"""

from __future__ import annotations

import numpy as np

#: Every kind of simulated object, lenses first; engines draw all of them.
KINDS: tuple[str, ...] = ("lens", "elliptical", "spiral", "ring", "sf-ring", "merger", "companion", "edge-on")
NON_LENS_KINDS: tuple[str, ...] = KINDS[1:]
#: Default relative frequencies of the non-lens kinds in training sets and mock surveys.
DEFAULT_NON_LENS_WEIGHTS: dict[str, float] = {
    "elliptical": 0.24,
    "spiral": 0.14,
    "ring": 0.12,
    "sf-ring": 0.10,
    "merger": 0.12,
    "companion": 0.16,
    "edge-on": 0.12,
}
#: Versions of the object population both engines draw (``population`` in data specs).
#: 1: a deflector's half-light radius scales with its Einstein radius, while the non-lens
#: early types take theirs from a size-luminosity relation, so at a given brightness the
#: large-θE deflectors are larger than any non-lens: a shortcut real lenses do not offer
#: (size at fixed magnitude told deflectors from ellipticals with AUROC 0.675 in the
#: lenstronomy engine, 0.575 in the GalSim engine; 0.497 and 0.514 in population 2).
#: 2: deflectors take their size from the same size-luminosity relation as the non-lens
#: early types; they differ from them only by the brightness their mass gives (the same in
#: both) and by lensing.
POPULATIONS: tuple[int, ...] = (1, 2)
#: The population drawn unless one is named: 1, which the shipped default model and every
#: recorded measurement used (a data spec without ``population`` means 1). Name 2 for new
#: training sets and mock surveys; the default becomes 2 when the default model is
#: retrained on it.
POPULATION = 1


def check_population(population: int) -> int:
    """``population`` as an int, or a ValueError naming the known versions."""
    if isinstance(population, bool) or population not in POPULATIONS:
        raise ValueError(f"population must be one of {', '.join(map(str, POPULATIONS))}; got {population!r}")
    return int(population)


#: Names of the simulation engines (``engine`` in data specs and truth tables).
ENGINES: tuple[str, ...] = ("lenstronomy", "galsim")
#: Sectors of ``arc_azimuth_fraction``.
AZIMUTH_SECTORS = 36


def arc_snr(arc_image: np.ndarray, sky_sigma: np.ndarray) -> np.ndarray:
    """Arc S/N per band (Lanusse et al. 2018, eq. 10) of a noiseless lensed-source image.

    Args:
        arc_image: (bands, H, W) noiseless, PSF-convolved lensed-source light, in counts.
        sky_sigma: per-band noise sigma per pixel, in counts.

    Returns:
        float64 array (bands,); 0 where no pixel exceeds half a sigma.
    """
    arcs = np.asarray(arc_image, dtype=np.float64)
    sky = np.asarray(sky_sigma, dtype=np.float64)
    out = np.zeros(arcs.shape[0])
    for band in range(arcs.shape[0]):
        segment = arcs[band] > 0.5 * sky[band]
        n_pix = int(np.count_nonzero(segment))
        if n_pix:
            out[band] = arcs[band][segment].sum() / (sky[band] * np.sqrt(n_pix))
    return out


def npix_above(arc_band_image: np.ndarray, sky_sigma: float, n_sigma: float = 1.0) -> int:
    """Pixels of a one-band noiseless arc image above ``n_sigma`` noise sigmas (Bom et al. 2022)."""
    return int(np.count_nonzero(np.asarray(arc_band_image) > n_sigma * sky_sigma))


def arc_azimuth_fraction(arc_band_image: np.ndarray, sky_sigma: float, centre_px: tuple[float, float],
                         inner_radius_px: float = 0.0) -> float:
    """Share of ten-degree sectors around ``centre_px = (x, y)`` holding arc pixels above 1 sigma
    at least ``inner_radius_px`` from the centre."""
    image = np.asarray(arc_band_image)
    rows, cols = np.nonzero(image > sky_sigma)
    far = np.hypot(rows - centre_px[1], cols - centre_px[0]) >= inner_radius_px
    rows, cols = rows[far], cols[far]
    if rows.size == 0:
        return 0.0
    angle = np.arctan2(rows - centre_px[1], cols - centre_px[0])
    sectors = np.floor((angle + np.pi) / (2 * np.pi) * AZIMUTH_SECTORS).astype(int) % AZIMUTH_SECTORS
    return float(np.unique(sectors).size / AZIMUTH_SECTORS)


def arc_truth(
    arc_image: np.ndarray,
    sky_sigma: np.ndarray,
    bands: tuple[str, ...] | list[str],
    centre_px: tuple[float, float],
    theta_e_px: float,
) -> dict[str, float | int | str]:
    """The arc-visibility truth of one lens: per-band and best-band S/N, Npix, azimuth coverage.

    ``centre_px`` is the lens centre (x, y) in array coordinates and ``theta_e_px`` its
    Einstein radius in pixels.

    Keys: ``arc_snr`` (best band), ``arc_band``, ``npix_arc_1sigma`` and
    ``arc_azimuth_fraction`` (both in the best band), and ``arc_snr_<band>`` per band.
    """
    snr = arc_snr(arc_image, sky_sigma)
    best = int(np.argmax(snr))
    sky = np.asarray(sky_sigma, dtype=np.float64)
    record: dict[str, float | int | str] = {
        "arc_snr": float(snr[best]),
        "arc_band": str(bands[best]),
        "npix_arc_1sigma": npix_above(arc_image[best], float(sky[best])),
        "arc_azimuth_fraction": arc_azimuth_fraction(arc_image[best], float(sky[best]), centre_px, 0.5 * theta_e_px),
    }
    for index, band in enumerate(bands):
        record[f"arc_snr_{band}"] = float(snr[index])
    return record


def no_arc_truth(bands: tuple[str, ...] | list[str]) -> dict[str, float | int | str]:
    """The same keys for a non-lens: NaN S/N, no band, no pixels."""
    record: dict[str, float | int | str] = {
        "arc_snr": float("nan"), "arc_band": "", "npix_arc_1sigma": 0, "arc_azimuth_fraction": float("nan")}
    for band in bands:
        record[f"arc_snr_{band}"] = float("nan")
    return record
