"""A folder of photos as users have them: four classes of drawn shapes (one folder name not ASCII),
sizes from 60x60 to 400x300, RGB and grayscale, .jpg, .JPEG and PNG (RGB, RGBA, palette, 16-bit
gray), one corrupt file, EXIF-rotated JPEGs, and files that are not images (hidden, .txt,
.gif). Writes ROOT/train and ROOT/test; deterministic for a seed.

    python3 make_photos.py ROOT [SEED]
"""
import os
import random
import sys

from PIL import Image, ImageDraw

CLASSES = ["circle", "square", "triangle", "étoile rouge"]


def draw(kind, w, h, rng):
    background = tuple(rng.randrange(0, 90) for _ in range(3))
    color = tuple(rng.randrange(150, 256) for _ in range(3))
    image = Image.new("RGB", (w, h), background)
    d = ImageDraw.Draw(image)
    s = min(w, h) * rng.uniform(0.45, 0.8)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
    if kind == "circle":
        d.ellipse(box, fill=color)
    elif kind == "square":
        d.rectangle(box, fill=color)
    elif kind == "triangle":
        d.polygon([(cx, cy - s / 2), (cx - s / 2, cy + s / 2), (cx + s / 2, cy + s / 2)], fill=color)
    else:   # a red star
        import math
        points = []
        for i in range(10):
            r = s / 2 if i % 2 == 0 else s / 5
            a = math.pi / 2 + i * math.pi / 5
            points.append((cx + r * math.cos(a), cy - r * math.sin(a)))
        d.polygon(points, fill=(rng.randrange(200, 256), rng.randrange(0, 60), rng.randrange(0, 60)))
    return image


def write(image, folder, index, rng, counts):
    base = os.path.join(folder, "%03d" % index)
    kind = index % 8
    if kind == 0:
        image.convert("L").save(base + ".jpg", quality=90)
    elif kind == 1:
        image.save(base + ".JPEG", quality=85)
    elif kind == 2:
        image.convert("RGBA").save(base + ".png")
        counts["png"] += 1
    elif kind == 3:
        image.convert("P", palette=Image.ADAPTIVE, colors=64).save(base + ".png")
        counts["png"] += 1
    elif kind == 4:
        Image.fromarray(__import__("numpy").asarray(image.convert("L")).astype("uint16") * 257).save(base + ".png")
        counts["png"] += 1
    elif kind == 5:
        # EXIF orientation 6: stored rotated 90 degrees clockwise, shown upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(base + ".jpg", exif=exif.tobytes(), quality=90)
    elif kind == 6:
        image.save(base + ".png", optimize=True)
        counts["png"] += 1
    else:
        image.save(base + ".jpg", quality=rng.randrange(60, 95))


def main():
    root = sys.argv[1]
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    counts = {"png": 0}
    for split, n in (("train", 40), ("test", 12)):
        for kind in CLASSES:
            folder = os.path.join(root, split, kind)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                w, h = rng.randrange(60, 401), rng.randrange(60, 301)
                write(draw(kind, w, h, rng), folder, i, rng, counts)
    train = os.path.join(root, "train")
    with open(os.path.join(train, "circle", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    open(os.path.join(train, "square", ".DS_Store"), "wb").write(b"\0\0\0\1Bud1")
    open(os.path.join(train, "triangle", "notes.txt"), "w").write("taken on holiday\n")
    Image.new("RGB", (64, 64), (200, 0, 0)).save(os.path.join(train, "triangle", "anim.gif"))
    print("%d PNG files" % counts["png"])


if __name__ == "__main__":
    main()
