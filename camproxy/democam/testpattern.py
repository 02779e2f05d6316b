"""The demo camera's picture: a live test pattern drawn with Pillow.

The scene is a large virtual test card rendered once (lit and unlit); each frame crops the
window the pan/tilt position looks at, draws a crosshair, the clock and the position on it,
and encodes it as a JPEG. Only the crop, a little text and the encoder run per frame.
"""

from __future__ import annotations

import io
from datetime import datetime

import attrs
from PIL import Image, ImageDraw, ImageFont

# How much larger the virtual scene is than the view, so a pan or tilt visibly shifts it.
_SCENE_SCALE_X = 3
_SCENE_SCALE_Y = 2
_UNLIT_LEVEL = 0.45
_BARS = (
    (192, 192, 192),
    (192, 192, 0),
    (0, 192, 192),
    (0, 192, 0),
    (192, 0, 192),
    (192, 0, 0),
    (0, 0, 192),
)


def clock_text(seconds: float) -> str:
    """Format a POSIX time as local ``HH:MM:SS.mmm``."""
    stamp = datetime.fromtimestamp(seconds)
    return stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_scene(width: int, height: int) -> Image.Image:
    """The whole virtual scene: a hue/value gradient, a degree grid and a test card."""
    scene_w, scene_h = width * _SCENE_SCALE_X, height * _SCENE_SCALE_Y
    hue = Image.linear_gradient("L").rotate(90).resize((scene_w, scene_h))
    saturation = Image.new("L", (scene_w, scene_h), 150)
    value = Image.linear_gradient("L").resize((scene_w, scene_h)).point(lambda v: 70 + v // 2)
    scene = Image.merge("HSV", (hue, saturation, value)).convert("RGB")
    draw = ImageDraw.Draw(scene)

    label_font = _font(max(12, height // 30))
    step = max(16, width // 8)
    for x in range(0, scene_w, step):
        draw.line([(x, 0), (x, scene_h)], fill=(255, 255, 255), width=1)
    for y in range(0, scene_h, step):
        draw.line([(0, y), (scene_w, y)], fill=(255, 255, 255), width=1)
    for gx, x in enumerate(range(0, scene_w, step)):
        for gy, y in enumerate(range(0, scene_h, step)):
            draw.text((x + 4, y + 3), f"{chr(65 + gy % 26)}{gx}", fill=(0, 0, 0), font=label_font)

    # A colour-bar card in the middle of the scene, i.e. in view at the start position.
    card_w, card_h = width * 3 // 4, height // 2
    left, top = (scene_w - card_w) // 2, (scene_h - card_h) // 2
    bar_w = card_w / len(_BARS)
    for index, colour in enumerate(_BARS):
        x0 = left + round(index * bar_w)
        x1 = left + round((index + 1) * bar_w)
        draw.rectangle([(x0, top), (x1, top + card_h * 2 // 3)], fill=colour)
    for index in range(8):
        grey = index * 255 // 7
        x0 = left + card_w * index // 8
        x1 = left + card_w * (index + 1) // 8
        draw.rectangle([(x0, top + card_h * 2 // 3), (x1, top + card_h)], fill=(grey,) * 3)
    draw.rectangle([(left, top), (left + card_w, top + card_h)], outline=(0, 0, 0), width=3)
    radius = min(card_w, card_h) // 3
    cx, cy = scene_w // 2, scene_h // 2
    draw.ellipse(
        [(cx - radius, cy - radius), (cx + radius, cy + radius)], outline=(0, 0, 0), width=4
    )
    title_font = _font(max(14, height // 16))
    title = "CamProxy demo camera"
    box = draw.textbbox((cx, top - 8), title, font=title_font, anchor="md")
    draw.rectangle([(box[0] - 6, box[1] - 4), (box[2] + 6, box[3] + 4)], fill=(255, 255, 255))
    draw.text((cx, top - 8), title, fill=(0, 0, 0), font=title_font, anchor="md")
    return scene


@attrs.define
class PatternRenderer:
    """Renders test-pattern JPEG frames for a pan/tilt position, light state and time.

    ``limits`` is ``(min_x, max_x, min_y, max_y)``: the full range maps onto the scene, so
    ``left`` (x up) moves the view left and ``up`` (y down) moves it up.
    """

    width: int = 640
    height: int = 480
    quality: int = 70
    limits: tuple[int, int, int, int] = (0, 180, 0, 90)
    _lit: Image.Image = attrs.field(init=False)
    _unlit: Image.Image = attrs.field(init=False)
    _font: ImageFont.FreeTypeFont | ImageFont.ImageFont = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"frame size {self.width}x{self.height} is too small")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"JPEG quality {self.quality} is not within 1..95")
        self._lit = _draw_scene(self.width, self.height)
        self._unlit = self._lit.point(lambda v: int(v * _UNLIT_LEVEL))
        self._font = _font(max(12, self.height // 24))

    def window(self, x: int, y: int) -> tuple[int, int]:
        """The top-left scene coordinate of the view at position ``(x, y)``."""
        min_x, max_x, min_y, max_y = self.limits
        span_x = self._lit.width - self.width
        span_y = self._lit.height - self.height
        fx = (max_x - x) / (max_x - min_x) if max_x > min_x else 0.5
        fy = (y - min_y) / (max_y - min_y) if max_y > min_y else 0.5
        fx = min(1.0, max(0.0, fx))
        fy = min(1.0, max(0.0, fy))
        return round(fx * span_x), round(fy * span_y)

    def render(self, x: int, y: int, light: bool, now: float) -> bytes:
        """One JPEG frame (``FF D8`` ... ``FF D9``)."""
        left, top = self.window(x, y)
        scene = self._lit if light else self._unlit
        frame = scene.crop((left, top, left + self.width, top + self.height))
        draw = ImageDraw.Draw(frame)
        w, h = self.width, self.height
        cx, cy = w // 2, h // 2
        arm = min(w, h) // 12
        draw.line([(cx - arm, cy), (cx + arm, cy)], fill=(255, 0, 0), width=2)
        draw.line([(cx, cy - arm), (cx, cy + arm)], fill=(255, 0, 0), width=2)

        text = f"{clock_text(now)}  x={x} y={y}  light {'on' if light else 'off'}"
        box = draw.textbbox((8, 6), text, font=self._font)
        draw.rectangle([(0, 0), (w, box[3] + 6)], fill=(0, 0, 0))
        draw.text((8, 6), text, fill=(255, 255, 255), font=self._font)

        lamp = max(6, h // 40)
        lx, ly = w - 2 * lamp - 6, box[3] + 2 * lamp + 6
        if light:
            draw.ellipse([(lx - lamp, ly - lamp), (lx + lamp, ly + lamp)], fill=(255, 230, 80))
        else:
            draw.ellipse(
                [(lx - lamp, ly - lamp), (lx + lamp, ly + lamp)], outline=(128, 128, 128), width=2
            )

        out = io.BytesIO()
        frame.save(out, format="JPEG", quality=self.quality)
        return out.getvalue()
