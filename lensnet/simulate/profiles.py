"""Survey profiles: the instrument and observing conditions a simulation imitates.

A :class:`SurveyProfile` fixes the bands, pixel scale, nominal PSF, photometric zero
points and sky noise of a survey. Simulations draw per-stamp observing conditions around
these nominal values (see :func:`lensnet.simulate.objects.draw_parameters`) so that a
network trained on them does not latch onto one exact seeing or noise level.

Photometry convention: an object of AB magnitude ``mag`` in band ``b`` has a total of
``10 ** (-0.4 * (mag - zeropoint_mag[b]))`` counts, and the sky noise is white Gaussian
with standard deviation ``sky_sigma[b]`` counts per pixel.

Multi-resolution surveys (Euclid: VIS at 0.1"/px, NISP Y/J/H at 0.3"/px) record the native
scale of each band in ``band_pixel_scale_arcsec``. The simulator currently renders every
band on the common grid of ``pixel_scale_arcsec`` (as if the coarse bands had been
resampled onto the fine one), with ``sky_sigma`` quoted per *common-grid* pixel; native
multi-resolution stamps are a planned follow-up. ``resolution_groups`` already tells which
bands share a native grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SurveyProfile:
    """Nominal instrument and observing conditions of an imaging survey.

    Attributes:
        name: short identifier used on the command line and in metadata.
        bands: band names, in the order of the image channels.
        pixel_scale_arcsec: pixel scale of the (common) grid that stamps are rendered on.
        psf_fwhm_arcsec: nominal Gaussian PSF FWHM per band.
        zeropoint_mag: AB zero point per band (magnitude of one count).
        sky_sigma: nominal per-pixel Gaussian noise sigma per band, in counts.
        stamp_size_px: default side of a square stamp, in pixels.
        band_wavelength_nm: effective wavelength per band, used by the colour model.
        reference_band: band in which object magnitudes are drawn and catalogued.
        band_pixel_scale_arcsec: native pixel scale per band for multi-resolution surveys;
            ``None`` means every band is native at ``pixel_scale_arcsec``.
        psf_jitter_frac: fractional spread (uniform, +-) of the per-stamp seeing around
            the nominal FWHM.
        noise_jitter_frac: fractional spread (log-uniform, +-) of the per-stamp sky sigma:
            1.5 spans sky sigmas from 1/2.5 to 2.5 times nominal, i.e. +-1 mag of depth.
        seeing_range_arcsec: range of the reference band's PSF FWHM that a wide population
            spans (the seeing of the survey's worst and best fields); ``None`` means the
            nominal FWHM times ``1 +- psf_jitter_frac``.
        saturation_counts: pixel value at which bright stars saturate (flat cores and
            bleed trails in simulations with artefacts).
    """

    name: str
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    psf_fwhm_arcsec: tuple[float, ...]
    zeropoint_mag: tuple[float, ...]
    sky_sigma: tuple[float, ...]
    stamp_size_px: int
    band_wavelength_nm: tuple[float, ...] = ()
    reference_band: str = ""
    band_pixel_scale_arcsec: tuple[float, ...] | None = None
    psf_jitter_frac: float = 0.15
    noise_jitter_frac: float = 0.3
    seeing_range_arcsec: tuple[float, float] | None = None
    saturation_counts: float = 1.0e4

    def __post_init__(self) -> None:
        n = len(self.bands)
        per_band: dict[str, Sequence[float] | None] = {
            "psf_fwhm_arcsec": self.psf_fwhm_arcsec,
            "zeropoint_mag": self.zeropoint_mag,
            "sky_sigma": self.sky_sigma,
            "band_wavelength_nm": self.band_wavelength_nm,
            "band_pixel_scale_arcsec": self.band_pixel_scale_arcsec,
        }
        for field_name, values in per_band.items():
            if values is not None and len(values) != n:
                raise ValueError(f"{self.name}: {field_name} has {len(values)} entries for {n} bands")
        if self.reference_band and self.reference_band not in self.bands:
            raise ValueError(f"{self.name}: reference band {self.reference_band!r} not in {self.bands}")
        if self.pixel_scale_arcsec <= 0 or self.stamp_size_px <= 0:
            raise ValueError(f"{self.name}: pixel scale and stamp size must be positive")
        if self.seeing_range_arcsec is not None and not 0 < self.seeing_range_arcsec[0] <= self.seeing_range_arcsec[1]:
            raise ValueError(f"{self.name}: seeing_range_arcsec must be (low, high) with 0 < low <= high")

    @property
    def seeing_range(self) -> tuple[float, float]:
        """(best, worst) reference-band PSF FWHM of the survey's fields, in arcsec."""
        if self.seeing_range_arcsec is not None:
            return self.seeing_range_arcsec
        nominal = self.psf_fwhm_arcsec[self.reference_index]
        return nominal * (1.0 - self.psf_jitter_frac), nominal * (1.0 + self.psf_jitter_frac)

    @property
    def n_bands(self) -> int:
        """Number of bands (image channels)."""
        return len(self.bands)

    @property
    def reference_index(self) -> int:
        """Channel index of the reference band (the middle band if none was set)."""
        if self.reference_band:
            return self.bands.index(self.reference_band)
        return self.n_bands // 2

    @property
    def is_multi_resolution(self) -> bool:
        """Whether the bands have different native pixel scales."""
        scales = self.band_pixel_scale_arcsec
        return scales is not None and len(set(scales)) > 1

    @property
    def resolution_groups(self) -> dict[float, tuple[str, ...]]:
        """Bands grouped by native pixel scale (arcsec), finest first."""
        scales = self.band_pixel_scale_arcsec or (self.pixel_scale_arcsec,) * self.n_bands
        groups: dict[float, tuple[str, ...]] = {}
        for band, scale in sorted(zip(self.bands, scales, strict=True), key=lambda item: item[1]):
            groups[scale] = (*groups.get(scale, ()), band)
        return groups

    def counts(self, mag: float, band_index: int) -> float:
        """Total counts of a source of AB magnitude ``mag`` in band ``band_index``."""
        return float(10.0 ** (-0.4 * (mag - self.zeropoint_mag[band_index])))

    def magnitude(self, counts: float, band_index: int) -> float:
        """AB magnitude of ``counts`` total counts in band ``band_index`` (inf if <= 0)."""
        if counts <= 0:
            return float("inf")
        return float(self.zeropoint_mag[band_index] - 2.5 * math.log10(counts))


def _sky_sigma_for_depth(depth_mag: float, zeropoint_mag: float, pixel_scale_arcsec: float) -> float:
    """Per-pixel sky sigma giving a 5-sigma point-source depth in a 2" diameter aperture."""
    aperture_px = math.pi * (1.0 / pixel_scale_arcsec) ** 2
    flux_5sigma = 10.0 ** (-0.4 * (depth_mag - zeropoint_mag))
    return flux_5sigma / (5.0 * math.sqrt(aperture_px))


# KiDS/LSST-like ground-based g, r, i: 5-sigma 2" depths of 25.3/25.0/24.3 mag, between a
# KiDS single pass and a few-year LSST coadd.
_GROUND_ZP = 30.0
GROUND_GRI = SurveyProfile(
    name="ground-gri",
    bands=("g", "r", "i"),
    pixel_scale_arcsec=0.2,
    psf_fwhm_arcsec=(0.85, 0.72, 0.80),
    zeropoint_mag=(_GROUND_ZP,) * 3,
    sky_sigma=tuple(round(_sky_sigma_for_depth(d, _GROUND_ZP, 0.2), 3) for d in (25.3, 25.0, 24.3)),
    stamp_size_px=64,
    band_wavelength_nm=(475.0, 620.0, 760.0),
    reference_band="r",
    # Fields from excellent to poor seeing and from a shallow single pass to a deep coadd.
    noise_jitter_frac=1.5,
    seeing_range_arcsec=(0.5, 1.4),
)

# Euclid-like: VIS (0.1"/px, 5-sigma ~25.5 mag in a 2" aperture for extended light) and
# NISP Y, J, H (native 0.3"/px, ~24 mag). Rendered on the VIS grid (see module docstring);
# NISP noise is quoted per VIS pixel of a 3x3-resampled native pixel.
_EUCLID_ZP = 30.0
EUCLID_LIKE = SurveyProfile(
    name="euclid-like",
    bands=("VIS", "Y", "J", "H"),
    pixel_scale_arcsec=0.1,
    psf_fwhm_arcsec=(0.17, 0.30, 0.33, 0.36),
    zeropoint_mag=(_EUCLID_ZP,) * 4,
    sky_sigma=tuple(round(_sky_sigma_for_depth(d, _EUCLID_ZP, 0.1), 3) for d in (25.5, 24.0, 24.0, 24.0)),
    stamp_size_px=128,
    band_wavelength_nm=(715.0, 1080.0, 1370.0, 1770.0),
    reference_band="VIS",
    band_pixel_scale_arcsec=(0.1, 0.3, 0.3, 0.3),
    psf_jitter_frac=0.05,  # space-based: stable PSF
    noise_jitter_frac=0.15,
)

PROFILES: dict[str, SurveyProfile] = {p.name: p for p in (GROUND_GRI, EUCLID_LIKE)}


def get_profile(name: str | SurveyProfile) -> SurveyProfile:
    """Return the survey profile called ``name`` (a profile passes through unchanged).

    Raises:
        KeyError: if no profile has that name; the message lists the known names.
    """
    if isinstance(name, SurveyProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown survey profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}") from None
