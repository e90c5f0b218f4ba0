"""Draw docs/images/reach.png: what the trust region (``reach``) allows on a given mask.

    python docs/make_reach_picture.py
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_airm.engine.reach import default_reach


def main() -> None:
    h, w = 360, 640
    yy, xx = np.mgrid[:h, :w]
    big = (yy - 180) ** 2 + (xx - 190) ** 2 < 130 ** 2
    small = (yy - 90) ** 2 + (xx - 470) ** 2 < 14 ** 2
    bar = (yy >= 250) & (yy < 258) & (xx >= 380) & (xx < 610)
    given = big | small | bar
    reach = default_reach(h, w)  # 50 px here
    allowed = reach.allowed(given)
    out = np.full((h, w, 3), 245, np.uint8)
    out[given & ~allowed] = (70, 110, 200)      # inside, stands exactly
    out[given & allowed] = (150, 185, 240)      # inside, may change
    out[~given & allowed] = (250, 205, 140)     # outside, may change
    img = Image.fromarray(out)
    d = ImageDraw.Draw(img)
    ys, xs = np.nonzero(given & ~(np.roll(given, 1, 0) & np.roll(given, -1, 0)
                                  & np.roll(given, 1, 1) & np.roll(given, -1, 1)))
    for y, x in zip(ys, xs):
        d.point((int(x), int(y)), fill=(0, 0, 0))
    d.text((10, 8), f"auto reach = {reach.radius} px (a tenth of the mean side); black: the given boundary",
           fill=(0, 0, 0))
    d.text((10, 338), "dark blue: stands exactly   light blue / orange: may change (inside / outside)",
           fill=(0, 0, 0))
    d.text((395, 118), "small object: keeps its core", fill=(0, 0, 0))
    d.text((395, 268), "thin bar: 1 px each side", fill=(0, 0, 0))
    target = Path(__file__).resolve().parent / "images" / "reach.png"
    img.save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
