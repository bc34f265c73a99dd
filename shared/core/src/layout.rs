//! The layout engine: from the ordered stage to panes on the output canvas.
//!
//! Coordinates are [`Frac`]s, exact integers in units of 1/10000 of the canvas, not floats: two
//! layouts computed by two handlers compare equal exactly, the golden tests are exact, and
//! adjacent grid cells share an edge (cell `i` spans `round(i/n)..round((i+1)/n)`) so they can't
//! overlap or leave gaps through rounding. Alibaba receives them as decimal strings ("0.5").
//!
//! Styles (the host is always first, and largest or equal):
//! - `Grid` (default): equal cells; portrait canvases get more rows than columns, landscape more
//!   columns than rows, so **two people on the default 720×1280 portrait canvas are stacked**
//!   (two 720×640 panes) instead of two 360-wide slivers. A short last row is centred.
//! - `Split`: the host takes half the canvas (top on portrait, left on landscape), co-streamers
//!   share the other half as a grid. For two people it equals `Grid`.
//! - `Pip`: the host fills the canvas; co-streamers are 22% tiles in rows of four from the
//!   bottom-right corner, drawn above the host.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, UserId};

/// Alibaba's layout limit: at most 16 panes.
pub const MAX_PANES: usize = 16;

/// A fraction of the canvas in units of 1/10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Frac(u16);

impl Frac {
    pub const ZERO: Frac = Frac(0);
    pub const ONE: Frac = Frac(Self::DENOM);
    pub const DENOM: u16 = 10_000;

    /// `num/den` of the canvas, rounded half up. `num <= den`, `den > 0`.
    fn ratio(num: u32, den: u32) -> Frac {
        debug_assert!(den > 0 && num <= den);
        let scaled =
            (u64::from(num) * u64::from(Self::DENOM) * 2 + u64::from(den)) / (2 * u64::from(den));
        Frac(
            u16::try_from(scaled)
                .unwrap_or(Self::DENOM)
                .min(Self::DENOM),
        )
    }

    pub fn from_units(units: u16) -> Option<Frac> {
        (units <= Self::DENOM).then_some(Frac(units))
    }

    pub fn units(self) -> u16 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::DENOM)
    }
}

/// Shortest decimal form, as the official SDKs send it: `0`, `1`, `0.5`, `0.3333`.
impl fmt::Display for Frac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::DENOM;
        let rest = self.0 % Self::DENOM;
        if rest == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{rest:04}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Output canvas in pixels. Alibaba accepts 1..=1920 in each dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Canvas {
    width: u32,
    height: u32,
}

impl Canvas {
    pub const MAX_SIDE: u32 = 1920;
    /// The seed guide's encoder setting: 720×1280 portrait.
    pub const PORTRAIT_720P: Canvas = Canvas {
        width: 720,
        height: 1280,
    };
    pub const LANDSCAPE_720P: Canvas = Canvas {
        width: 1280,
        height: 720,
    };

    pub fn new(width: u32, height: u32) -> Result<Canvas, LayoutError> {
        for side in [width, height] {
            if side == 0 || side > Self::MAX_SIDE {
                return Err(LayoutError::CanvasSide(side));
            }
        }
        Ok(Canvas { width, height })
    }
    pub fn width(self) -> u32 {
        self.width
    }
    pub fn height(self) -> u32 {
        self.height
    }
    pub fn is_portrait(self) -> bool {
        self.height > self.width
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("canvas side {0} px is outside 1..=1920")]
    CanvasSide(u32),
    #[error("unknown layout style {0:?}; expected grid, split or pip")]
    UnknownStyle(String),
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum LayoutStyle {
    #[default]
    Grid,
    Split,
    Pip,
}

impl std::str::FromStr for LayoutStyle {
    type Err = LayoutError;
    fn from_str(s: &str) -> Result<Self, LayoutError> {
        match s.to_ascii_lowercase().as_str() {
            "grid" => Ok(LayoutStyle::Grid),
            "split" => Ok(LayoutStyle::Split),
            "pip" => Ok(LayoutStyle::Pip),
            _ => Err(LayoutError::UnknownStyle(s.to_owned())),
        }
    }
}

/// How a stream fills its pane (Alibaba `RenderMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RenderMode {
    /// `"0"`: scale to fit, black bars.
    Fit,
    /// `"1"`: scale and crop to fill (Alibaba's default).
    #[default]
    Crop,
}

impl RenderMode {
    fn is_crop(&self) -> bool {
        *self == RenderMode::Crop
    }
}

/// An image URL Alibaba can fetch (http or https, at most 2048 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageUrl(String);

impl ImageUrl {
    pub fn parse(s: impl Into<String>) -> Result<ImageUrl, ImageUrlError> {
        let s = s.into();
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return Err(ImageUrlError::Scheme(s));
        }
        if s.len() > 2048 {
            return Err(ImageUrlError::TooLong(s.len()));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageUrlError::Whitespace);
        }
        Ok(ImageUrl(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageUrl {
    type Error = ImageUrlError;
    fn try_from(s: String) -> Result<Self, ImageUrlError> {
        ImageUrl::parse(s)
    }
}

impl From<ImageUrl> for String {
    fn from(u: ImageUrl) -> String {
        u.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageUrlError {
    #[error("image URL {0:?} must start with https:// or http://")]
    Scheme(String),
    #[error("image URL is {0} characters long, the limit is 2048")]
    TooLong(usize),
    #[error("image URL contains whitespace")]
    Whitespace,
}

/// Which of a user's video tracks a pane shows (Alibaba `SourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Source {
    /// `camera`: the user's camera (the default).
    #[default]
    Camera,
    /// `shareScreen`: the user's shared screen.
    Screen,
}

impl Source {
    fn is_camera(&self) -> bool {
        *self == Source::Camera
    }
}

/// One pane of the mixed picture.
///
/// Stored with every room write (in the record's applied task), so its JSON is short: one-letter
/// names, defaults left out; the long names are still read (rooms written before).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pane {
    #[serde(rename = "u", alias = "user")]
    pub user: UserId,
    /// The track shown: the camera, or the shared screen.
    #[serde(
        rename = "s",
        alias = "source",
        default,
        skip_serializing_if = "Source::is_camera"
    )]
    pub source: Source,
    /// The user's channel when it is not the room's own (the PK peer's host).
    #[serde(
        rename = "c",
        alias = "channel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub channel: Option<ChannelId>,
    pub x: Frac,
    pub y: Frac,
    #[serde(rename = "w", alias = "width")]
    pub width: Frac,
    #[serde(rename = "h", alias = "height")]
    pub height: Frac,
    /// 0 is the bottom layer.
    #[serde(
        rename = "z",
        alias = "z_order",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub z_order: u8,
    #[serde(
        rename = "m",
        alias = "render_mode",
        default,
        skip_serializing_if = "RenderMode::is_crop"
    )]
    pub render_mode: RenderMode,
    /// Shown while the pane's user sends no video (a camera turned off, the host's included).
    #[serde(
        rename = "p",
        alias = "placeholder",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub placeholder: Option<ImageUrl>,
}

fn is_zero(z: &u8) -> bool {
    *z == 0
}

/// A complete layout: every pane of the mixed stream, host first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layout {
    pub canvas: Canvas,
    pub panes: Vec<Pane>,
    /// The whole canvas's background image (the room's setting, else the deployment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<ImageUrl>,
    /// Users on stage who are heard but have no pane (co-hosts with their camera off in a room
    /// that hides them): mixed as audio only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio: Vec<UserId>,
}

impl Layout {
    /// Every user the mix subscribes to: the panes' users (once each), then the audio-only ones.
    pub fn users(&self) -> Vec<&UserId> {
        let mut out: Vec<&UserId> = Vec::new();
        for u in self.panes.iter().map(|p| &p.user).chain(&self.audio) {
            if !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }
}

/// What the engine needs besides the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSpec<'a> {
    pub canvas: Canvas,
    pub style: LayoutStyle,
    pub render_mode: RenderMode,
    pub placeholder: Option<&'a ImageUrl>,
}

/// A rectangle in canvas units, used while placing panes.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x: Frac,
    y: Frac,
    w: Frac,
    h: Frac,
}

const FULL: Rect = Rect {
    x: Frac::ZERO,
    y: Frac::ZERO,
    w: Frac::ONE,
    h: Frac::ONE,
};

/// Lays out `stage` (host first; at most [`MAX_PANES`] are used).
pub fn layout(spec: &LayoutSpec<'_>, stage: &[UserId]) -> Layout {
    let stage = &stage[..stage.len().min(MAX_PANES)];
    let n = stage.len();
    let rects: Vec<(Rect, u8)> = match spec.style {
        LayoutStyle::Grid => grid(FULL, n, spec.canvas)
            .into_iter()
            .map(|r| (r, 0))
            .collect(),
        LayoutStyle::Split if n >= 3 => {
            let (host, rest) = halves(spec.canvas);
            let sub = Canvas {
                width: scale(spec.canvas.width, rest.w),
                height: scale(spec.canvas.height, rest.h),
            };
            std::iter::once(host)
                .chain(grid(rest, n - 1, sub))
                .map(|r| (r, 0))
                .collect()
        }
        LayoutStyle::Split => grid(FULL, n, spec.canvas)
            .into_iter()
            .map(|r| (r, 0))
            .collect(),
        LayoutStyle::Pip => std::iter::once((FULL, 0))
            .chain(pip_tiles(n.saturating_sub(1)).into_iter().map(|r| (r, 1)))
            .take(n)
            .collect(),
    };
    let panes = stage
        .iter()
        .zip(rects)
        .map(|(user, (r, z))| pane(spec, user, Source::Camera, r, z))
        .collect();
    Layout {
        canvas: spec.canvas,
        panes,
        background: None,
        audio: Vec::new(),
    }
}

fn pane(spec: &LayoutSpec<'_>, user: &UserId, source: Source, r: Rect, z: u8) -> Pane {
    Pane {
        user: user.clone(),
        source,
        channel: None,
        x: r.x,
        y: r.y,
        width: r.w,
        height: r.h,
        z_order: z,
        render_mode: spec.render_mode,
        placeholder: spec.placeholder.cloned(),
    }
}

/// The layout while `sharer` shares their screen: the screen fills the canvas at the bottom
/// (ZOrder 0, scaled to fit: a screen is rarely the canvas's shape), and the cameras of `cameras`
/// (the stage, host first) are picture-in-picture tiles above it, as in `Pip` (at most
/// [`MAX_PANES`] panes in all).
pub fn screen_layout(spec: &LayoutSpec<'_>, sharer: &UserId, cameras: &[UserId]) -> Layout {
    let cameras = &cameras[..cameras.len().min(MAX_PANES - 1)];
    let screen = Pane {
        render_mode: RenderMode::Fit,
        ..pane(spec, sharer, Source::Screen, FULL, 0)
    };
    let panes = std::iter::once(screen)
        .chain(
            cameras
                .iter()
                .zip(pip_tiles(cameras.len()))
                .map(|(user, r)| pane(spec, user, Source::Camera, r, 1)),
        )
        .collect();
    Layout {
        canvas: spec.canvas,
        panes,
        background: None,
        audio: Vec::new(),
    }
}

fn scale(px: u32, f: Frac) -> u32 {
    (px * u32::from(f.units()) / u32::from(Frac::DENOM)).max(1)
}

/// The host's half and the co-streamers' half.
fn halves(canvas: Canvas) -> (Rect, Rect) {
    let half = Frac(Frac::DENOM / 2);
    if canvas.is_portrait() {
        (
            Rect { h: half, ..FULL },
            Rect {
                y: half,
                h: half,
                ..FULL
            },
        )
    } else {
        (
            Rect { w: half, ..FULL },
            Rect {
                x: half,
                w: half,
                ..FULL
            },
        )
    }
}

/// `n` equal cells inside `area`, row by row; `shape` is the area's pixel size and decides whether
/// rows or columns dominate. A short last row is centred.
fn grid(area: Rect, n: usize, shape: Canvas) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let major = ceil_sqrt(n32);
    let minor = n32.div_ceil(major);
    let (cols, rows) = if shape.is_portrait() {
        (minor, major)
    } else {
        (major, minor)
    };
    // Map a fraction `num/den` of the area onto the canvas.
    let along = |origin: Frac, len: Frac, num: u32, den: u32| {
        let offset = u32::from(Frac::ratio(num, den).0) * u32::from(len.0) / u32::from(Frac::DENOM);
        Frac(origin.0 + u16::try_from(offset).unwrap_or(len.0))
    };
    (0..n32)
        .map(|i| {
            let row = i / cols;
            let col = i % cols;
            let in_row = if row == rows - 1 {
                n32 - row * cols
            } else {
                cols
            };
            // Centre a short row: shift by half a cell per missing cell (in half-cell units).
            let shift = cols - in_row;
            let x0 = along(area.x, area.w, 2 * col + shift, 2 * cols);
            let x1 = along(area.x, area.w, 2 * col + 2 + shift, 2 * cols);
            let y0 = along(area.y, area.h, row, rows);
            let y1 = along(area.y, area.h, row + 1, rows);
            Rect {
                x: x0,
                y: y0,
                w: Frac(x1.0 - x0.0),
                h: Frac(y1.0 - y0.0),
            }
        })
        .collect()
}

fn ceil_sqrt(n: u32) -> u32 {
    (1..=n).find(|k| k * k >= n).unwrap_or(n)
}

/// The layout of a PK: this room's host on the left half, the peer room's host on the right
/// half (pulled from the peer's channel), this room's co-hosts as picture-in-picture tiles on
/// the host's half (22% of the half's sides, rows of four from its bottom-right corner). The same
/// split in both orientations: a PK is two pictures side by side. At most [`MAX_PANES`] panes.
pub fn pk_layout(
    spec: &LayoutSpec<'_>,
    host: &UserId,
    peer: (&ChannelId, &UserId),
    cohosts: &[UserId],
) -> Layout {
    // Co-hosts beyond the pane limit are still heard.
    let (cohosts, heard) = cohosts.split_at(cohosts.len().min(MAX_PANES - 2));
    let half = Frac(Frac::DENOM / 2);
    let left = Rect { w: half, ..FULL };
    let right = Rect {
        x: half,
        w: half,
        ..FULL
    };
    let (peer_channel, peer_host) = peer;
    let mut panes = vec![
        pane(spec, host, Source::Camera, left, 0),
        Pane {
            channel: Some(peer_channel.clone()),
            ..pane(spec, peer_host, Source::Camera, right, 0)
        },
    ];
    panes.extend(
        cohosts
            .iter()
            .zip(pip_tiles(cohosts.len()))
            .map(|(user, tile)| pane(spec, user, Source::Camera, within(left, tile), 1)),
    );
    Layout {
        canvas: spec.canvas,
        panes,
        background: None,
        audio: heard.to_vec(),
    }
}

/// `inner` (in units of the whole canvas) mapped into `area`.
fn within(area: Rect, inner: Rect) -> Rect {
    let map = |origin: Frac, len: Frac, v: Frac| {
        let scaled = u32::from(v.0) * u32::from(len.0) / u32::from(Frac::DENOM);
        Frac(origin.0 + u16::try_from(scaled).unwrap_or(len.0))
    };
    let x0 = map(area.x, area.w, inner.x);
    let y0 = map(area.y, area.h, inner.y);
    let x1 = map(area.x, area.w, Frac(inner.x.0 + inner.w.0));
    let y1 = map(area.y, area.h, Frac(inner.y.0 + inner.h.0));
    Rect {
        x: x0,
        y: y0,
        w: Frac(x1.0 - x0.0),
        h: Frac(y1.0 - y0.0),
    }
}

/// Picture-in-picture tiles: 22% of each side (so tiles keep the canvas's aspect), 2% margins,
/// rows of four from the bottom-right corner upwards.
fn pip_tiles(n: usize) -> Vec<Rect> {
    const SIZE: u16 = 2_200;
    const MARGIN: u16 = 200;
    const PER_ROW: u16 = 4;
    (0..u16::try_from(n).unwrap_or(u16::MAX))
        .map(|j| {
            let from_right = j % PER_ROW;
            let from_bottom = j / PER_ROW;
            let x = Frac::DENOM - MARGIN - (from_right + 1) * SIZE - from_right * MARGIN;
            let y = Frac::DENOM - MARGIN - (from_bottom + 1) * SIZE - from_bottom * MARGIN;
            Rect {
                x: Frac(x),
                y: Frac(y),
                w: Frac(SIZE),
                h: Frac(SIZE),
            }
        })
        .collect()
}
