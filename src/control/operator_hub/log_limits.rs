//! The WORKFLOW config's log-line limits: `max_task_log_lines` per task run
//! and `max_log_lines` per workflow. Lines past either are dropped; the
//! first of them is replaced by one marker line saying so.
//!
//! Invariants:
//! - a run stores at most `max_task_log_lines` lines of its own, a workflow
//!   at most `max_log_lines`, plus one marker per run that lost lines;
//! - the marker takes offset [`CLOSED`], above any offset an executor uses,
//!   so the run's later lines fall at or below its indexed offset and are
//!   dropped as resends — on this connection, after a reconnect and on a
//!   new leader alike — with no state beyond the chunk index (raising a
//!   limit later does not reopen a closed run);
//! - counting is by lines taken into chunks (the marker included), read
//!   from the index when a run or workflow is first seen on a connection.

use crate::protocol::{LogLine, LogStream};

/// The offset of a marker line: the run is closed.
pub const CLOSED: u64 = u64::MAX;

/// Lines a task run and a workflow may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub task_lines: u64,
    pub workflow_lines: u64,
}

/// Lines already stored (or taken into a chunk) for a run and its workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub run: u64,
    pub workflow: u64,
}

/// `lines` (one run, offsets increasing, none at or below what is stored)
/// cut to the limits: kept lines, then a marker if any line was dropped;
/// `stored` counts what is returned.
pub fn cap(lines: Vec<LogLine>, stored: &mut Stored, limits: LogLimits) -> Vec<LogLine> {
    let mut kept = Vec::with_capacity(lines.len());
    for line in lines {
        let marker = if stored.run >= limits.task_lines {
            Some(format!(
                "[gantry] this task reached max_task_log_lines ({}): its later lines are dropped",
                limits.task_lines
            ))
        } else if stored.workflow >= limits.workflow_lines {
            Some(format!(
                "[gantry] this workflow reached max_log_lines ({}): this task's later lines are dropped",
                limits.workflow_lines
            ))
        } else {
            None
        };
        stored.run = stored.run.saturating_add(1);
        stored.workflow = stored.workflow.saturating_add(1);
        match marker {
            None => kept.push(line),
            Some(text) => {
                kept.push(LogLine {
                    offset: CLOSED,
                    stream: LogStream::Osmo,
                    time: line.time,
                    text,
                });
                break;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(offsets: std::ops::Range<u64>) -> Vec<LogLine> {
        offsets
            .map(|offset| LogLine {
                offset,
                stream: LogStream::Stdout,
                time: 1,
                text: format!("y {offset}"),
            })
            .collect()
    }

    const LIMITS: LogLimits = LogLimits {
        task_lines: 5,
        workflow_lines: 8,
    };

    #[test]
    fn a_run_keeps_its_first_lines_then_one_marker() {
        let mut stored = Stored::default();
        let first = cap(lines(0..3), &mut stored, LIMITS);
        assert_eq!(first.len(), 3);
        let second = cap(lines(3..100), &mut stored, LIMITS);
        let offsets: Vec<u64> = second.iter().map(|l| l.offset).collect();
        assert_eq!(offsets, vec![3, 4, CLOSED]);
        assert!(
            second[2].text.contains("max_task_log_lines (5)"),
            "{second:?}"
        );
        assert_eq!(stored.run, 6);
    }

    #[test]
    fn the_workflow_limit_closes_every_run_that_goes_on() {
        let mut stored = Stored {
            run: 0,
            workflow: 7,
        };
        let kept = cap(lines(0..3), &mut stored, LIMITS);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].offset, CLOSED);
        assert!(kept[1].text.contains("max_log_lines (8)"), "{kept:?}");
        // Limits of zero keep only the marker.
        let mut stored = Stored::default();
        let none = LogLimits {
            task_lines: 0,
            workflow_lines: 0,
        };
        let kept = cap(lines(0..3), &mut stored, none);
        assert_eq!(
            kept.iter().map(|l| l.offset).collect::<Vec<_>>(),
            vec![CLOSED]
        );
    }
}
