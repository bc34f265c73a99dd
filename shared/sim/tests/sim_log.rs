//! The simulated Live API logs every call on one line with stable fields. This is its own test
//! binary on purpose: tracing caches per-call-site interest process-wide, so capturing logs with a
//! scoped subscriber while other tests run in parallel threads is racy.

use std::io::Write;
use std::sync::{Arc, Mutex};

use costream_alibaba::request::{Mix, SingleSubParams, StartLiveMpuTask, StreamOutput};
use costream_alibaba::LiveRequest;
use costream_alibaba::SystemClock;
use costream_sim::SimulatedLive;

/// A `Write` into a shared buffer, to read what the fmt subscriber logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn start() -> LiveRequest {
    StartLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Single(SingleSubParams::camera("host_u1")),
        output: StreamOutput::Url(
            "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3".into(),
        ),
        max_idle_time: Some(120),
        region: None,
        sei: None,
    }
    .into()
}

#[test]
fn every_call_is_logged_on_one_line_with_its_fields() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let sim = SimulatedLive::new(SystemClock);
    tracing::subscriber::with_default(subscriber, || {
        sim.answer(&start()).expect("started");
        let _already = sim.answer(&start());
    });
    let text = String::from_utf8(buffer.0.lock().expect("log buffer").clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for field in [
        "action=StartLiveMPUTask",
        "task_id=\"room-1001_main\"",
        "mix_mode=\"0\"",
        "summary=single host_u1",
    ] {
        assert!(lines.iter().all(|l| l.contains(field)), "{field} in {text}");
    }
    assert!(lines[0].contains("code=OK"), "{text}");
    assert!(lines[1].contains("code=InvalidParam"), "{text}");
    assert!(
        !text.contains("auth_key"),
        "the signed URL stays out of the log: {text}"
    );
}
