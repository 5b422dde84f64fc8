//! Progress of a long pass over the log on stderr: one line rewritten in place on a terminal,
//! plain periodic lines otherwise (logs, pipes, CI).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_event_store::progress::Progress;
use tokio::task::JoinHandle;

/// A display of `progress` running until [`Display::finish`].
pub struct Display {
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Display {
    /// Starts showing `progress` under `label` (every 0.5 s on a terminal, every 5 s otherwise).
    pub fn start(label: &str, progress: Arc<Progress>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let label = label.to_owned();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
                let line = line(&label, progress.done(), progress.total(), started.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = if tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
                let _ = err.flush();
            }
            let line = line(&label, progress.done(), progress.total(), started.elapsed());
            let mut err = std::io::stderr().lock();
            let _ = if tty { writeln!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
        });
        Self { stop, task }
    }

    /// Stops the display after one last line.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// `label: 120,000 / 1,000,000 events (12%), 150,000 events/s, ETA 6 s`.
fn line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    let mut out = format!("{label}: {} ", thousands(done));
    if total > 0 {
        let pct = (done as f64 * 100.0 / total as f64).min(100.0);
        out.push_str(&format!("/ {} events ({pct:.0}%)", thousands(total)));
    } else {
        out.push_str("events");
    }
    out.push_str(&format!(", {} events/s", thousands(rate as u64)));
    if total > done && rate > 0.0 {
        out.push_str(&format!(", ETA {:.0} s", (total - done) as f64 / rate));
    }
    out.push_str(&format!(", {:.1} s", elapsed.as_secs_f64()));
    out
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_count_rate_and_eta() {
        assert_eq!(
            line("rebuild", 300_000, 1_000_000, Duration::from_secs(2)),
            "rebuild: 300,000 / 1,000,000 events (30%), 150,000 events/s, ETA 5 s, 2.0 s"
        );
        assert_eq!(line("verify", 999, 0, Duration::from_secs(1)), "verify: 999 events, 999 events/s, 1.0 s");
    }
}
