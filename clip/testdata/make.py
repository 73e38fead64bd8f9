"""Writes the preprocessing test images with PIL (Debian python3-pil):
    /usr/bin/python3 clip/testdata/make.py clip/testdata
Photo-like content (gradients, texture, shapes, noise) in the modes open_clip
meets: an RGB JPEG (4:2:0, 4:2:2, 4:4:4), a greyscale JPEG, a CMYK JPEG
(Adobe, inverted, as Photoshop writes them), an RGBA PNG with transparent
and translucent parts, a grey+alpha PNG, a palette PNG, an RGB PNG already
224 on its short side, a small image that is upscaled, and a lossy WebP."""
import sys, os
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

out = sys.argv[1]
rng = np.random.default_rng(20240101)

def photo(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)
    g = 90 + 80 * (x / w) + 40 * np.sin((x + y) / 11.0)
    b = 60 + 150 * (y / h)
    a = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(5, w // 2), y0 + rng.integers(5, h // 2)
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.ellipse([x0, y0, x1, y1], fill=col)
        else:
            d.rectangle([x0, y0, x1, y1], outline=col, width=3)
    return im.filter(ImageFilter.SMOOTH)

p = photo(173, 131)
p.save(os.path.join(out, "photo.jpg"), quality=90)                     # 4:2:0
photo(150, 201).save(os.path.join(out, "photo422.jpg"), quality=85, subsampling=1)
photo(97, 120).save(os.path.join(out, "photo444.jpg"), quality=95, subsampling=0)
photo(180, 135).convert("L").save(os.path.join(out, "grey.jpg"), quality=90)
photo(160, 100).convert("CMYK").save(os.path.join(out, "cmyk.jpg"), quality=92)
rgba = photo(143, 97).convert("RGBA")
al = np.zeros((97, 143), np.uint8)
al[:, :] = np.clip(np.mgrid[0:97, 0:143][1] * 2, 0, 255)   # left edge transparent
al[20:40, 60:100] = 128
al[70:, :30] = 0
rgba.putalpha(Image.fromarray(al))
rgba.save(os.path.join(out, "alpha.png"))
la = photo(88, 130).convert("LA")
la.putalpha(Image.fromarray(np.clip(rng.normal(200, 60, (130, 88)), 0, 255).astype(np.uint8)))
la.save(os.path.join(out, "greyalpha.png"))
photo(111, 77).convert("P", palette=Image.ADAPTIVE, colors=64).save(os.path.join(out, "palette.png"))
photo(300, 224).save(os.path.join(out, "short224.png"))
photo(60, 45).save(os.path.join(out, "small.png"))
photo(130, 170).save(os.path.join(out, "photo.webp"), quality=80)
