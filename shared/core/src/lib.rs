//! The pure room core: ids, events, the room's facts, who is on stage, the layout and the
//! decision. No async, no clock, no randomness, no AWS or HTTP types: everything time-like
//! arrives as data, so every function here is deterministic and tested exhaustively.

pub mod config;
pub mod decide;
pub mod event;
pub mod facts;
pub mod ids;
pub mod layout;
pub mod record;
pub mod stage;

#[cfg(test)]
mod tests;

pub use config::{DecisionConfig, EncodeSettings, VideoCodec};
pub use decide::{decide, next_command, target, Command, Decision, MixMode, Shape, Target};
pub use event::{CdnAction, EventError, Role, RoomEvent, UserAction, UserEvent};
pub use facts::{CdnStatus, Facts, Merge};
pub use ids::{AppId, ChannelId, IdError, MsgId, SessionId, TaskId, Timestamp, UserId, Version};
pub use layout::{
    layout, Canvas, Frac, ImageUrl, Layout, LayoutSpec, LayoutStyle, Pane, RenderMode, MAX_PANES,
};
pub use record::{apply, Record};
pub use stage::{Broadcast, Stage};
