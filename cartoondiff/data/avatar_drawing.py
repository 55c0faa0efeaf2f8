"""How a Cartoon-Set-style avatar is drawn: palettes, geometry and the painter.

All coordinates are in Cartoon Set's 500x500 frame, placed as measured on real images (hair
top near y=100, eyes at y=264, chin at y=362..408, ears at x=250+-100). ``paint(pen, ids)``
draws one avatar through a ``Pen`` that maps frame coordinates onto a (cropped, scaled)
canvas. ``cartoondiff.data.synthesize`` wraps this into images, arrays and files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from cartoondiff.attributes import NAMES

FRAME = 500  # Cartoon Set's image side; all geometry below is in this frame
GLASSES_NONE = 11
FACIAL_HAIR_NONE = 14
Color = tuple[int, int, int]


def _hexes(text: str) -> tuple[Color, ...]:
    return tuple((int(h[:2], 16), int(h[2:4], 16), int(h[4:], 16)) for h in text.split())


# Approximate colours measured from real Cartoon Set images (not an official palette: Google
# publishes none); glasses colours chosen to be distinct.
HAIR_COLORS = _hexes("f8d888 f7b64f e97133 be4e2f d39838 a25939 5e361f 251b19 90a3ac dddbda")
FACE_COLORS = _hexes("603d30 88594b aa7454 c78b5d d9a16e e3b47e eeaf94 f0c092 f6d8c1 fbcdb6 fbdbd1")
EYE_COLORS = _hexes("735346 515e74 6c734b 7b7c78 46403a")
GLASSES_COLORS = _hexes("1e1e22 8a8d91 c8323c f28cab 2f6fd0 8b5a2b d9aa2e")
INK: Color = (28, 22, 20)
WHITE: Color = (255, 255, 255)

# face_shape -> half-widths at temple (y 200), cheek (262), jaw (318), chin (362); chin dy
FACE_SHAPES = ((86, 90, 78, 34, 0), (92, 98, 92, 52, -10), (92, 93, 93, 64, -4),
               (98, 93, 66, 18, 6), (80, 82, 78, 40, 16), (74, 98, 70, 24, 4),
               (78, 88, 98, 60, 0))
CHIN_DY = (-6, 4, 14)
# eyebrow_shape -> (tilt: outer end lower by, arch height, arch peak 0..1, angular peak)
BROW_SHAPES = ((0, 0, .5, 0), (-9, 0, .5, 0), (9, 0, .5, 0), (0, 6, .5, 0), (0, 12, .5, 0),
               (0, 10, .65, 1), (-6, 8, .6, 1), (6, 8, .4, 0), (0, -6, .5, 0), (-10, 7, .75, 1),
               (4, 14, .35, 1), (-5, 10, .5, 0), (11, 5, .3, 1), (0, 9, .85, 1))
# hair tops (each with 4 back lengths x 3 textures), after the 3 specials below
TOPS = ("crop", "part_left", "part_right", "middle", "spiky", "quiff", "bangs", "bun", "volume")
HAIR_SPECIALS = ("bald", "horseshoe", "puffs")
LENGTH_END = (0, 345, 405, 455)  # bottom y of the back hair: none, chin, shoulder, long
# hairline control points of each top in TOPS, right to left (between the sideburns)
HAIRLINES = (((300, 182), (250, 175), (200, 182)),
             ((305, 176), (285, 168), (230, 192), (190, 210)),
             ((310, 210), (270, 192), (215, 168), (195, 176)),
             ((300, 176), (250, 158), (200, 176)),
             ((318, 190), (305, 170), (290, 192), (270, 176), (250, 194), (232, 176), (212, 192),
              (195, 172), (178, 198)),
             ((300, 168), (250, 160), (200, 168)),
             ((330, 204), (250, 204), (170, 204)),
             ((300, 182), (250, 175), (200, 182)),
             ((300, 180), (250, 172), (200, 180)))
SUNGLASSES = frozenset({1, 4, 7, 9})


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _spline(ctrl: Sequence[Sequence[float]], per: int = 8, closed: bool = False) -> np.ndarray:
    """Catmull-Rom curve through control points (K, 2) -> points (M, 2)."""
    p = np.asarray(ctrl, dtype=np.float64)
    p = np.concatenate([p[-1:], p, p[:2]]) if closed else np.concatenate([p[:1], p, p[-1:]])
    t = np.linspace(0.0, 1.0, per, endpoint=False)[None, :, None]
    p0, p1, p2, p3 = (p[i:len(p) - 3 + i, None] for i in range(4))
    out = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
    out = out.reshape(-1, 2)
    return out if closed else np.concatenate([out, p[-2:-1]])


def _resample(pts: np.ndarray, step: float = 3.0) -> np.ndarray:
    """Points every ``step`` px along a polyline, so textures have even wavelengths."""
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    u = np.linspace(0.0, s[-1], max(int(s[-1] / step), 2))
    return np.stack([np.interp(u, s, pts[:, 0]), np.interp(u, s, pts[:, 1])], axis=1)


def _textured(pts: np.ndarray, texture: int, amp: float = 1.0) -> np.ndarray:
    """Push a polyline along its left normal (outward for our clockwise outlines).

    texture 0 straight, 1 wavy (sine), 2 curly (rounded scallops).
    """
    if texture == 0:
        return pts
    pts = _resample(pts)
    d = np.gradient(pts, axis=0)
    n = np.stack([d[:, 1], -d[:, 0]], axis=1) / (np.hypot(*d.T)[:, None] + 1e-9)
    s = np.arange(len(pts)) * 3.0
    off = 6 * np.sin(s / 13.0) if texture == 1 else 11 * np.abs(np.sin(s / 11.0)) - 3
    return pts + n * (amp * off)[:, None]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 48,
         bump: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Ellipse arc (n, 2) from angle a0 to a1 in degrees (counter-clockwise as seen, y down);
    ``bump(angle)`` adds to both radii."""
    a = np.radians(np.linspace(a0, a1, n))
    b = 0.0 if bump is None else bump(np.degrees(a))
    return np.stack([cx + (rx + b) * np.cos(a), cy - (ry + b) * np.sin(a)], axis=1)


class Pen:
    """Draws frame-coordinate shapes onto a canvas that shows one square window of the frame."""

    def __init__(self, image: Image.Image, origin: float, scale: float) -> None:
        self.draw = ImageDraw.Draw(image)
        self.origin, self.scale = origin, scale

    def _xy(self, pts: np.ndarray) -> list[float]:
        return ((np.asarray(pts) - self.origin) * self.scale).ravel().tolist()

    def _w(self, width: float) -> int:
        return max(1, round(width * self.scale))

    def shape(self, pts: np.ndarray, fill: Color, line: Color | None = None, width: float = 3.0,
              ) -> None:
        self.draw.polygon(self._xy(pts), fill=fill)
        if line is not None:  # once round and on to the second point: every corner is joined
            self.stroke(np.concatenate([pts, pts[:2]]), line, width)

    def stroke(self, pts: np.ndarray, color: Color, width: float = 3.0) -> None:
        self.draw.line(self._xy(pts), fill=color, width=self._w(width), joint="curve")


def _face_outline(shape: int, chin: int) -> np.ndarray:
    """Closed head outline (M, 2), from the skull top clockwise: right side, chin, left side."""
    tw, cw, jw, kw, dy = FACE_SHAPES[shape]
    bottom = 378 + dy + CHIN_DY[chin]
    right = [(250 + 0.6 * tw, 126), (250 + 0.93 * tw, 158), (250 + tw, 200), (250 + cw, 262),
             (250 + jw, 318), (250 + kw, bottom - 16)]
    left = [(500 - x, y) for x, y in reversed(right)]
    return _spline([(250, 118), *right, (250, bottom), *left], per=6, closed=True)


def _hair_parts(style: int) -> tuple[str, int, int]:
    """hair id -> (top, length index 0..3, texture 0..2); specials have length/texture 0."""
    if style < len(HAIR_SPECIALS):
        return HAIR_SPECIALS[style], 0, 0
    top, rest = divmod(style - len(HAIR_SPECIALS), 12)
    return TOPS[top], rest // 3, rest % 3


def _head_ellipse(top: str) -> tuple[float, float, float]:
    """(rx, ry, cy) of the ellipse the hair is built around, centred on x=250."""
    return (126, 118, 205) if top == "volume" else (110, 104, 202)


def _cap(top: str, texture: int, temple: float) -> np.ndarray:
    """The hair over the skull: closed polygon (outer silhouette, then the hairline)."""
    rx, ry, cy = _head_ellipse(top)

    def bump(deg: np.ndarray) -> np.ndarray:
        if top == "spiky":  # triangle wave: sharp spikes over the crown
            return 24 * np.abs((deg - 20) / 14 % 2 - 1) * ((deg > 20) & (deg < 160))
        if top == "quiff":
            return 40 * np.exp(-(((deg - 112) / 26) ** 2))
        return 0 * deg

    outer = _textured(_arc(250, cy, rx, ry, 208, -28, 116, bump), texture)  # down to the ears
    x0, y0 = outer[-1]
    x1, y1 = outer[0]
    ctrl = HAIRLINES[TOPS.index(top) if top in TOPS else 0]
    # sideburns just inside the face's temples, so no background shows between hair and face
    side = temple - 8
    line = [(x0, y0), (250 + side, 240), (250 + side, 212), *ctrl, (250 - side, 212),
            (250 - side, 240), (x1, y1)]
    hairline = np.asarray(line, float) if top in ("spiky", "bangs") else _spline(line, per=5)
    return np.concatenate([outer, hairline])


def _draw_hair_back(pen: Pen, top: str, length: int, texture: int, hair: Color,
                    edge: Color) -> None:
    """Hair behind the head: the long part, plus buns/puffs."""
    rx, ry, cy = _head_ellipse(top)
    if top == "bun":
        pen.shape(_textured(_arc(250, 100, 38, 34, 0, 360, 40), texture), hair, edge)
    if top == "puffs":
        for cx in (148, 352):
            pen.shape(_textured(_arc(cx, 140, 50, 48, 0, 360, 48), 2, 0.6), hair, edge)
    if top == "horseshoe":  # a ring of hair round the back: only its sides show
        pen.shape(_textured(_arc(250, 236, rx + 12, 90, 0, 360, 80), texture), hair, edge)
    if length == 0:
        return
    end, w = LENGTH_END[length], rx + 4 * length
    side = [(250 - w, end), (250 - rx - 2 * length, (cy + end) / 2)]
    outline = np.concatenate([_spline(side, per=8), _arc(250, cy, rx, ry, 180, 0, 60),
                              _spline([(500 - x, y) for x, y in reversed(side)], per=8)])
    outline = _textured(outline, texture, amp=1.3)
    # strand tips along the bottom edge, as Cartoon Set's long hair ends in points
    tips = [(250 + w, end), (250 + w - 16, end - 24), (250 + w - 30, end - 2),
            (250 + w - 46, end - 26), (250 + w - 58, end - 8), (250 + 0.3 * w, end - 40)]
    bottom = np.array(tips + [(500 - x, y) for x, y in reversed(tips)], float)
    pen.shape(np.concatenate([outline, bottom]), hair, edge)


def _draw_hair_front(pen: Pen, top: str, texture: int, hair: Color, edge: Color,
                     skin: Color, temple: float) -> None:
    """The cap over the skull (or bald/horseshoe) and its light strands."""
    light = _mix(hair, WHITE, 0.45)
    if top in ("bald", "horseshoe"):  # a shine on the bare crown
        pen.stroke(_arc(250, 205, 72, 78, 120, 75, 10), _mix(skin, WHITE, 0.4), 6)
        return
    rx, ry, cy = _head_ellipse(top)
    pen.shape(_cap(top, texture, temple), hair, edge)
    if top == "middle":
        pen.stroke(np.array([[250, 160], [250, 112]]), edge, 3)
    if texture == 2:  # curls: little open spirals of lighter hair
        t = np.linspace(0, 3 * math.pi, 24)
        spiral = np.stack([np.cos(t), -np.sin(t)], 1) * (13 - 3.2 * t)[:, None]
        for c in ((205, 135), (290, 125), (248, 108)):
            pen.stroke(spiral + c, light, 4)
    else:  # a shine streak on the crown
        tilt = 10 if texture == 1 else 0
        pen.stroke(_textured(_arc(250, cy + 10, rx * 0.75, ry * 0.8, 78, 48, 12), texture, .4),
                   light, 7)
        pen.stroke(_arc(250, cy + 10 + tilt, rx * 0.6, ry * 0.66, 72, 55, 8), light, 4)


def _draw_beard(pen: Pen, style: int, face: np.ndarray, hair: Color, edge: Color,
                skin: Color) -> None:
    """facial_hair 0..13 in the hair colour (12: stubble, a blend); 14 draws nothing."""
    if style == FACIAL_HAIR_NONE:
        return
    chin_y = face[:, 1].max()
    color, line = (_mix(skin, hair, 0.45), None) if style == 12 else (hair, edge)

    def lower(y0: float) -> np.ndarray:  # face outline below y0, R->L, grown by 4%
        p = face[face[:, 1] >= y0]
        return np.array([250.0, 270.0]) + (p - [250.0, 270.0]) * 1.04

    def band(y0: float, d: float) -> np.ndarray:  # a strip inside the outline
        p = lower(y0)
        c = np.array([250.0, 262.0])
        v = p - c
        inner = c + v * (1 - d / np.hypot(*v.T))[:, None]
        return np.concatenate([p, inner[::-1]])

    def full(y0: float, drop: float, moustache: bool) -> np.ndarray:
        p = lower(y0)
        p[:, 1] += drop * np.exp(-(((p[:, 0] - 250) / 48) ** 2))
        top_y = 316 if moustache else 356
        mid = [(205, 316), (228, top_y - 2), (250, top_y + 2), (272, top_y - 2), (295, 316)]
        return np.concatenate([p, _spline([tuple(p[-1]), *mid, tuple(p[0])], per=5)])

    right = face[face[:, 0] >= 250]
    right = right[np.argsort(right[:, 1])]

    def chop(s: int) -> np.ndarray:  # mutton chop: sideburn widening into the moustache
        def x(y: float, d: float) -> float:
            return 250 + s * (float(np.interp(y, right[:, 1], right[:, 0])) - 250 + d)
        pts = [(x(230, 4), 230), (x(290, 5), 290), (x(325, 4), 325), (250 + s * 34, 340),
               (250 + s * 28, 324), (x(300, -26), 300), (x(236, -16), 236)]
        return _spline(pts, per=5, closed=True)

    def goatee(w: float, drop: float) -> np.ndarray:
        pts = [(250 + w, 346), (250 + w + 4, chin_y - 12), (250 + 0.4 * w, chin_y + drop),
               (250, chin_y + drop + 4), (250 - 0.4 * w, chin_y + drop),
               (250 - w - 4, chin_y - 12), (250 - w, 346), (250, 352)]
        return _spline(pts, per=5, closed=True)

    thick = _spline([(214, 332), (222, 316), (250, 312), (278, 316), (286, 332), (250, 326)],
                    per=5, closed=True)
    parts: list[np.ndarray] = {
        0: lambda: [full(262, 6, True)],
        1: lambda: [full(262, 48, True)],
        2: lambda: [full(270, 16, False)],
        3: lambda: [band(285, 13)],
        4: lambda: [goatee(24, 8), thick],
        5: lambda: [goatee(20, 6)],
        6: lambda: [thick],
        7: lambda: [_spline([(222, 326), (236, 318), (250, 320), (264, 318), (278, 326),
                             (250, 323)], per=5, closed=True)],
        8: lambda: [_spline([(200, 306), (208, 322), (228, 316), (250, 314), (272, 316),
                             (292, 322), (300, 306), (296, 326), (272, 330), (250, 326),
                             (228, 330), (204, 326)], per=5, closed=True)],
        9: lambda: [thick, np.array([[214, 326], [226, 326], [228, 372], [216, 372]]),
                    np.array([[274, 326], [286, 326], [284, 372], [272, 372]])],
        10: lambda: [np.array([[236, 355], [264, 355], [250, 380]])],
        11: lambda: [chop(-1), chop(1), thick],
        12: lambda: [full(284, 4, True)],
        13: lambda: [goatee(26, 42), thick],
    }[style]()
    for part in parts:
        pen.shape(part, color, line, 2.5)


def _draw_eye(pen: Pen, side: int, a: dict[str, int], iris: Color, skin: Color) -> None:
    """One eye; side +1 is the viewer's right. Drawn in a local frame, then rotated."""
    hu, hl, skew = ((15, 11, -0.3), (16, 13, 0.0), (13, 10, 0.35))[a["eye_slant"]]
    u = np.linspace(-1, 1, 17)
    bulge = (1 - u**2) ** 0.75 * (1 + skew * u)
    up = np.stack([21 * u, -hu * bulge], 1)
    lo = np.stack([21 * u, hl * bulge], 1)
    ang = math.radians((-12, 0, 12)[a["eye_angle"]])  # outer corner up (+) or down (-)
    rot = np.array([[math.cos(ang), math.sin(ang)], [-math.sin(ang), math.cos(ang)]])
    centre = np.array([250 + side * 45, 264])

    def place(p: np.ndarray) -> np.ndarray:
        q = p @ rot.T
        return centre + q * [side, 1]

    def clipped_disc(cx: float, cy: float, r: float) -> np.ndarray:  # disc inside the eye
        t = np.linspace(0, 2 * math.pi, 28)
        x, y = cx + r * np.cos(t), cy + r * np.sin(t)
        return np.stack([x, np.clip(y, np.interp(x, up[:, 0], up[:, 1]),
                                    np.interp(x, lo[:, 0], lo[:, 1]))], 1)

    eye = np.concatenate([up, lo[::-1]])
    pen.shape(place(eye), WHITE)
    pen.shape(place(clipped_disc(-1, 1, 12.5)), iris)
    pen.shape(place(clipped_disc(-1, 1, 6)), INK)
    pen.shape(place(_arc(3, -3, 3, 3, 0, 360, 12)), WHITE)  # catch light
    if a["eye_lid"]:  # a heavy upper lid in darker skin
        lid = np.concatenate([up, (up * [1, 0.35])[::-1]])
        pen.shape(place(lid), _mix(skin, INK, 0.25))
    pen.stroke(place(lo), INK, 1.5)
    pen.stroke(place(up), INK, 4)
    if a["eye_lashes"]:
        for k, rise in ((12, 8), (14, 6), (16, 3)):  # three flicks at the outer corner
            pen.stroke(place(np.array([up[k], up[k] + [6, -rise]])), INK, 2.5)


def _draw_brow(pen: Pen, side: int, a: dict[str, int], color: Color) -> None:
    """One eyebrow: centre line from BROW_SHAPES, thickness profile from weight/thickness."""
    tilt, arch, peak, sharp = BROW_SHAPES[a["eyebrow_shape"]]
    width = (38, 46, 54)[a["eyebrow_width"]]
    thick = (5, 7.5, 10, 12.5)[a["eyebrow_thickness"]]
    base = 264 - (28, 34, 40)[a["eye_eyebrow_distance"]]
    t = np.linspace(0, 1, 18)
    d = np.where(t < peak, (peak - t) / peak, (t - peak) / (1 - peak))
    prof = 1 - (d if sharp else d**2)
    y = base + tilt * (t - 0.5) - arch * prof
    th = thick * ((1.25 - 0.85 * t) if a["eyebrow_weight"] else (1 - 0.3 * t**4))
    x = 250 + side * (16 + width * t)
    top = np.stack([x, y - th / 2], 1)
    bot = np.stack([x, y + th / 2], 1)
    pen.shape(np.concatenate([top, bot[::-1]]), color, color, 1.5)


def _lens(style: int) -> np.ndarray:
    """Right lens outline (K, 2) around (0, 0); +x is outward."""
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    if style in (0, 1, 8):  # round, oval, small round
        rx, ry = {0: (26, 26), 1: (31, 21), 8: (18, 18)}[style]
        return np.stack([rx * c, ry * s], 1)
    if style == 2:
        return np.array([[-30, -19], [30, -19], [30, 19], [-30, 19]], float)
    if style == 3:  # superellipse: a rounded rectangle
        return np.stack([31 * np.sign(c) * np.abs(c) ** 0.4, 22 * np.sign(s) * np.abs(s) ** 0.4], 1)
    if style == 7:  # the classic heart curve
        y = 13 * c - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([27 * s**3, 2 - 1.6 * y], 1)
    if style == 10:  # hexagon
        a = np.radians(np.arange(0, 360, 60))
        return np.stack([30 * np.cos(a), 24 * np.sin(a)], 1)
    ctrl = {4: [(-26, -15), (0, -17), (28, -15), (31, 2), (20, 21), (2, 23), (-18, 14),
                (-28, -2)],  # aviator
            5: [(-27, -12), (0, -15), (26, -23), (33, -15), (25, 9), (0, 17), (-23, 12),
                (-29, 0)],  # cat-eye
            6: [(-30, -20), (30, -20), (30, 2), (22, 17), (-22, 17), (-30, 2)]}[style]
    return _spline(ctrl, per=6, closed=True)


def _draw_glasses(pen: Pen, style: int, color: Color, cheek: float) -> None:
    """glasses 0..10 (1, 4, 7, 9 are sunglasses); GLASSES_NONE draws nothing."""
    if style == GLASSES_NONE:
        return
    tint = _mix(color, (12, 12, 16), 0.6)
    cy = 264
    for s in (-1, 1):  # temple arms towards the ears
        pen.stroke(np.array([[250 + s * 70, cy - 8], [250 + s * (cheek + 6), cy - 12]]), color, 5)
    if style == 9:  # one wrap-around shield
        pts = [(158, 240), (250, 236), (342, 240), (336, 276), (300, 292), (262, 282), (250, 272),
               (238, 282), (200, 292), (164, 276)]
        pen.shape(_spline(pts, per=5, closed=True), tint, color, 5)
        return
    lens = _lens(style) * 1.15  # Cartoon Set's frames are big: they reach the brows
    inner = lens[:, 0].min()
    for s in (-1, 1):
        pts = np.array([250 + s * 45, cy]) + lens * [s, 1]
        width = 4 if style == 8 else 6
        if style in SUNGLASSES:
            pen.shape(pts, tint, color, width)
        else:
            pen.stroke(np.concatenate([pts, pts[:2]]), color, width)
        if style == 6:  # browline: a heavy upper bar
            top = pts[:, 1].min() + 2
            pen.stroke(np.array([[pts[:, 0].min(), top], [pts[:, 0].max(), top]]), color, 11)
    bridge_x = 45 + inner
    pen.stroke(_spline([(250 - bridge_x, cy - 6), (250, cy - 12), (250 + bridge_x, cy - 6)], 5),
               color, 5)


def paint(pen: Pen, ids: Sequence[int]) -> None:
    """Draw one avatar, back to front."""
    a = dict(zip(NAMES, (int(v) for v in ids)))
    skin, hair = FACE_COLORS[a["face_color"]], HAIR_COLORS[a["hair_color"]]
    hair_edge = _mix(hair, INK, 0.55)
    top, length, texture = _hair_parts(a["hair"])
    face = _face_outline(a["face_shape"], a["chin_length"])
    temple, cheek = FACE_SHAPES[a["face_shape"]][:2]
    _draw_hair_back(pen, top, length, texture, hair, hair_edge)
    for s in (-1, 1):
        pen.shape(_arc(250 + s * (cheek + 2), 278, 16, 27, 0, 360, 28), skin, INK, 3)
        pen.stroke(_arc(250 + s * (cheek + 4), 280, 7, 14, 60, 250, 10) * [s, 1]
                   + [(1 - s) * 250, 0], _mix(skin, INK, 0.4), 2.5)  # inner ear
    pen.shape(face, skin, INK, 4.5)
    _draw_beard(pen, a["facial_hair"], face, hair, hair_edge, skin)
    pen.stroke(_arc(250, 298, 12, 10, 200, 340, 10), INK, 3)  # nose
    mouth = _spline([(222, 328), (250, 333), (278, 328), (266, 346), (250, 351), (234, 346)],
                    per=6, closed=True)
    pen.shape(mouth, WHITE, INK, 3)
    for s in (-1, 1):
        _draw_eye(pen, s, a, EYE_COLORS[a["eye_color"]], skin)
        _draw_brow(pen, s, a, _mix(hair, (70, 45, 30), 0.4))
    _draw_hair_front(pen, top, texture, hair, hair_edge, skin, temple)
    _draw_glasses(pen, a["glasses"], GLASSES_COLORS[a["glasses_color"]], cheek)
