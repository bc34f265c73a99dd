//! costream's pure room core: from what the callbacks said (the [`Facts`]) and what the shell
//! has applied (the [`Record`]) to the one MPU command that moves the room's bypass task towards
//! who is on stage now.
//!
//! # Layout
//! - [`ids`], [`event`]: validated newtypes and the room events parsed from callbacks.
//! - [`facts`]: **start here.** Per-user session summaries merged as semilattices, so any arrival
//!   order with any duplicates gives the same facts.
//! - [`stage`]: who hosts (an interval replay of publish starts) and who is on stage, derived.
//! - [`layout`]: the layout engine (grid, split, pip; exact 1/10000 coordinates).
//! - [`record`]: what the shell applied (running task, CDN heal) and [`apply`], the per-event step.
//! - [`decide`]: the target and [`next_command`] (Start, Update, Stop or nothing).
//!
//! # Invariants
//! - Pure: no async, clock, randomness, AWS or HTTP types — enforced by this crate's manifest
//!   (serde and thiserror only). Time arrives as event data.
//! - Facts are order-insensitive and idempotent (proptests `order_insensitive`,
//!   `apply_is_idempotent`).
//! - From any record the target is reached in at most two calls, and a running task of the live
//!   broadcast is never stopped or renamed (proptests over arbitrary records).

pub mod config;
pub mod decide;
pub mod event;
pub mod facts;
pub mod ids;
pub mod layout;
pub mod output;
pub mod pk;
pub mod record;
pub mod settings;
pub mod stage;

#[cfg(test)]
mod tests;

pub use config::{DecisionConfig, EncodeSettings, VideoCodec};
pub use decide::{
    decide, live_stage, next_command, target, Command, Decision, MixMode, Shape, Target,
};
pub use event::{CdnAction, EventError, Role, RoomEvent, UserAction, UserEvent};
pub use facts::{CdnStatus, Facts, Merge, MAX_FACTS_JSON_BYTES, MAX_MEMBERS};
pub use ids::{AppId, ChannelId, IdError, MsgId, SessionId, TaskId, Timestamp, UserId, Version};
pub use layout::{
    layout, pk_layout, screen_layout, Canvas, Frac, ImageUrl, Layout, LayoutSpec, LayoutStyle,
    Pane, RenderMode, Source, MAX_PANES,
};
pub use output::{OutputUrl, OutputUrlError, Outputs, OutputsError, MAX_EXTRA_OUTPUTS};
pub use pk::{PkLink, StampedPk};
pub use record::{apply, Record};
pub use settings::{RoomSettings, ScreenShare, Setting, StampedSettings};
pub use stage::{Broadcast, Stage};
