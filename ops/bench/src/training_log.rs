//! Synthetic training logs for the log-ingest benchmark: what a PyTorch
//! training loop prints (step metrics, progress bars, periodic evaluation
//! and checkpoint lines, rare warnings), deterministic per line number, and
//! the same lines as Redis `XADD` commands in RESP for `redis-cli --pipe`,
//! shaped like OSMO's log stream records.

use std::io::Write;

/// Line `i` (from 1) of a training run's output.
pub fn line(i: u64) -> String {
    // A cheap deterministic spread of the numbers (splitmix64).
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let frac = |shift: u32| ((x >> shift) & 0xFFFF) as f64 / 65_536.0;
    let epoch = i / 5_000 + 1;
    let rank = x % 8;
    if i.is_multiple_of(1_000) {
        format!(
            "[rank{rank}] INFO eval epoch={epoch} step={i} val_loss={:.4} val_acc={:.4} success_rate={:.3}",
            1.0 / (1.0 + i as f64 / 20_000.0) + frac(0) * 0.01,
            0.5 + frac(16) * 0.4,
            0.3 + frac(32) * 0.6,
        )
    } else if i.is_multiple_of(2_500) {
        format!("[rank{rank}] INFO saved checkpoint /osmo/data/output/checkpoints/step-{i:08}.pt (1.8 GiB) in {:.2}s", 2.0 + frac(8) * 3.0)
    } else if x.is_multiple_of(997) {
        format!(
            "[rank{rank}] WARNING gradient norm {:.1} above clip threshold 1.0; clipping",
            1.0 + frac(4) * 40.0
        )
    } else if i.is_multiple_of(50) {
        let done = (i % 5_000) * 40 / 5_000;
        format!(
            "Epoch {epoch}: {:>3}%|{}{}| {}/5000 [{:02}:{:02}<{:02}:{:02}, {:.2}it/s]",
            (i % 5_000) / 50,
            "█".repeat(done as usize),
            " ".repeat(40 - done as usize),
            i % 5_000,
            (i % 5_000) / 600,
            (i % 5_000) / 10 % 60,
            (5_000 - i % 5_000) / 600,
            (5_000 - i % 5_000) / 10 % 60,
            9.0 + frac(12) * 2.0,
        )
    } else {
        format!(
            "[rank{rank}] step {i} loss={:.4} lr={:.2e} grad_norm={:.3} throughput={:.1} samples/s gpu_mem={:.1}GiB",
            1.0 / (1.0 + i as f64 / 10_000.0) + frac(0) * 0.05,
            3e-4 * (1.0 - i as f64 / 2e6).max(0.01),
            0.2 + frac(20) * 0.9,
            1_800.0 + frac(40) * 90.0,
            70.0 + frac(48) * 3.0,
        )
    }
}

/// Writes lines `1..=count` of task `task` as `XADD` commands to `out`:
/// stream `<workflow>-<task>-0-logs`, fields as OSMO's log records
/// (`source`, `retry_id`, `time`, `text`, `io_type`).
pub fn write_redis_xadd(
    out: &mut impl Write,
    workflow: &str,
    task: &str,
    count: u64,
    time_ms: i64,
) -> std::io::Result<u64> {
    let key = format!("{workflow}-{task}-0-logs");
    let time = time_ms.to_string();
    let mut bytes = 0u64;
    for i in 1..=count {
        let text = line(i);
        bytes += text.len() as u64 + 1;
        let args: [&str; 13] = [
            "XADD", &key, "*", "source", task, "retry_id", "0", "time", &time, "text", &text,
            "io_type", "STDOUT",
        ];
        write!(out, "*{}\r\n", args.len())?;
        for arg in args {
            write!(out, "${}\r\n{arg}\r\n", arg.len())?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_deterministic_and_varied() {
        assert_eq!(line(7), line(7));
        let kinds: std::collections::BTreeSet<&str> = (1..=5_000)
            .map(line)
            .map(|l| {
                if l.contains("eval") {
                    "eval"
                } else if l.contains("checkpoint") {
                    "checkpoint"
                } else if l.starts_with("Epoch") {
                    "progress"
                } else if l.contains("WARNING") {
                    "warning"
                } else {
                    "step"
                }
            })
            .collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
    }

    #[test]
    fn resp_counts_bytes_of_utf8_text() {
        let mut out = Vec::new();
        write_redis_xadd(&mut out, "wf-1", "train", 200, 0).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("*13\r\n").count(), 200);
        // Progress line 150 holds a multi-byte bar: its length is in bytes.
        let progress = line(150);
        assert!(progress.contains('█'), "{progress}");
        assert!(text.contains(&format!("${}\r\n{progress}\r\n", progress.len())));
    }
}
