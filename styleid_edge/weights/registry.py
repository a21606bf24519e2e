"""The official StyleID / e4e files: names, Google Drive ids, roles and licence terms.

Ids come from the StyleID README's download script and the encoder4editing
README. Sizes and sha256 digests are not published upstream, so they are left
unset here; the first download records the sha256 of each file in the cache's
lock file (``weights.lock.json``) and later runs are verified against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownFileError

FFHQ_NC = ("NVIDIA Source Code License-NC (StyleGAN2 FFHQ weights): non-commercial use only "
           "(research and evaluation); FFHQ images are CC BY-NC-SA 4.0.")
E4E_TERMS = ("encoder4editing code MIT; the encoder was trained with the NVIDIA StyleGAN2 FFHQ generator, "
             "so its non-commercial terms apply.")
CELEBA_TERMS = ("StyleID code MIT; derived from CelebA-HQ (CelebA agreement: non-commercial research "
                "purposes only) and the NC FFHQ generator.")
IRSE_TERMS = ("InsightFace_Pytorch code MIT; trained on MS-Celeb-1M derived data: research use only, "
              "not for commercial use.")


@dataclass(frozen=True)
class WeightFile:
    """One downloadable official file."""

    name: str  # file name in the cache dir and on the host
    drive_id: str  # Google Drive file id
    role: str  # stylegan2 | e4e | arcface | mapper | channels_rank | groups_rank | calibration
    description: str
    licence: str
    non_commercial: bool
    source: str  # where the id is published
    size: int | None = None  # bytes, when known
    sha256: str | None = None  # when known; otherwise the lock file's first-download record is used

    @property
    def browser_url(self) -> str:
        return f"https://drive.google.com/file/d/{self.drive_id}/view"


_STYLEID = "StyleID README (github.com/minha12/StyleID), download script"
_E4E = "encoder4editing README (github.com/omertov/encoder4editing)"

OFFICIAL_FILES: tuple[WeightFile, ...] = (
    WeightFile("stylegan2-ffhq-config-f.pt", "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", "stylegan2",
               "StyleGAN2 FFHQ 1024 px generator (rosinality layout)", FFHQ_NC, True, _STYLEID),
    WeightFile("e4e_ffhq_encode.pt", "1cUv_reLE6k3604or78EranS7XzuVMWeO", "e4e",
               "encoder4editing FFHQ encoder (image -> W+)", E4E_TERMS, True, _E4E),
    WeightFile("model_ir_se50.pth", "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn", "arcface",
               "ArcFace IR-SE50 face recognizer", IRSE_TERMS, True, _STYLEID),
    WeightFile("mapper.pt", "1juhw71f7YQbApYYpOQI_kU3BOEk1Z4f5", "mapper",
               "StyleID latent swapper (LevelsJoinMapper)", CELEBA_TERMS, True, _STYLEID),
    WeightFile("channels_rank.npy", "12UlGf6xVbteJtzo8JzysuhPmujkzACiw", "channels_rank",
               "identity rank of StyleSpace channels", CELEBA_TERMS, True, _STYLEID),
    WeightFile("group_256_rank.npy", "1tRGYGIqkpcD3t67mIKXs-bLlPZn1j25E", "groups_rank",
               "identity rank of 256-channel StyleSpace groups", CELEBA_TERMS, True, _STYLEID),
    WeightFile("celeba_samples.pt", "1VlkFMkDaT25V00rk1tuovtkqd2h6Ggqo", "calibration",
               "CelebA-HQ W+ latent codes (calibration latents)", CELEBA_TERMS, True, _STYLEID),
)

_BY_NAME = {f.name: f for f in OFFICIAL_FILES}
_BY_ROLE = {f.role: f for f in OFFICIAL_FILES}


def names() -> list[str]:
    return [f.name for f in OFFICIAL_FILES]


def get_file(name: str) -> WeightFile:
    """The registry entry for a file name (or a role such as ``stylegan2``)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name in _BY_ROLE:
        return _BY_ROLE[name]
    raise UnknownFileError(f"unknown weights file {name!r}; known files: {', '.join(names())}")


def by_role(role: str) -> WeightFile:
    return _BY_ROLE[role]
