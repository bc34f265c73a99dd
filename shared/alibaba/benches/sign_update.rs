//! Cost of the CPU work of one `UpdateLiveMPUTask` attempt with a 16-pane layout (the old layout
//! system's maximum): build the request, serialize `TranscodeParams`, add the common
//! parameters, sign, and encode the form body. This runs on every attempt inside a Lambda, so it
//! should stay far below the network round trip.
//!
//! `cargo bench -p costream-alibaba --bench sign_update -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use costream_alibaba::request::{
    sign_request, Background, CommonParams, EncodeParams, Fraction, LiveRequest, Mix, MixLayout,
    PaneUserInfo, RenderMode, TranscodeParams, UpdateLiveMpuTask, UserInfo, UserPane, VideoCodec,
    DEFAULT_FORMAT,
};
use criterion::{criterion_group, criterion_main, Criterion};
use time::macros::datetime;

fn sixteen_pane_update() -> LiveRequest {
    let users: Vec<String> = (0..16).map(|i| format!("user_{i:02}")).collect();
    let quarter = |n: u32| Fraction::new(f64::from(n) * 0.25).expect("grid cell in [0, 1]");
    let user_panes = users
        .iter()
        .zip(0u32..)
        .map(|(user, i)| UserPane {
            background_image_url: Some("https://static.example.com/pane-bg.png".into()),
            height: quarter(1),
            render_mode: Some(RenderMode::Crop),
            user_info: Some(PaneUserInfo::camera(user.as_str())),
            width: quarter(1),
            x: quarter(i % 4),
            y: quarter(i / 4),
            z_order: 0,
        })
        .collect();
    UpdateLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Transcode(TranscodeParams {
            background: Some(Background {
                render_mode: Some(RenderMode::Crop),
                url: "https://static.example.com/bg-1280x720-0x1E1E1E.png".into(),
            }),
            encode_params: EncodeParams {
                audio_bitrate: Some(64),
                audio_channels: Some(2),
                audio_only: Some(false),
                audio_sample_rate: Some(48000),
                enhanced_param: None,
                video_bitrate: Some(2500),
                video_codec: Some(VideoCodec::H264),
                video_framerate: Some(25),
                video_gop: Some(2),
                video_height: Some(1080),
                video_width: Some(1920),
            },
            layout: Some(MixLayout { user_panes }),
            user_infos: users.iter().map(UserInfo::camera).collect(),
        }),
        output: None,
        sei: None,
    }
    .into()
}

fn bench(c: &mut Criterion) {
    let common = CommonParams {
        access_key_id: "testid",
        timestamp: datetime!(2024-01-02 03:04:05 UTC),
        signature_nonce: "5b0a6f3e0c1d4e2f8a9b1c2d3e4f5a6b",
        security_token: None,
        format: DEFAULT_FORMAT,
    };
    c.bench_function("build_sign_encode_update_16_panes", |b| {
        b.iter(|| {
            let request = sixteen_pane_update();
            let signed = sign_request(
                black_box(&request),
                black_box(&common),
                black_box("testsecret"),
            )
            .expect("signable");
            black_box(signed.encoded_params())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
