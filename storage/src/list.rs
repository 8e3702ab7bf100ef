//! The workflow list (OSMO's `GET /api/workflow`) answered from indexes.
//!
//! Every filter an index holds is a *dimension*: users, pools and tags
//! (`(key, submit seq)` indexes) and a short list of statuses; the value
//! list of a dimension is the union of one index range per value. The
//! dimensions are intersected by leapfrogging: each seeks to the candidate
//! seq the others agree on or beyond, so a run of workflows one dimension
//! lacks costs one seek, not one read each. Submit times rise with submit
//! order (`apply` keeps them so), so `submitted_after`/`before` is a window
//! of submit seqs, found with two seeks in the `(submit time, seq)` index.
//!
//! Only a workflow every dimension agrees on is looked at: its ID for the
//! name substring, its labels row for label selectors, and only then (if a
//! filter needs it: priority, a long status list, the time window) its
//! record (its specs only for the workflows returned). A page costs
//! `O((offset + limit + 1 + refused) · reads +
//! jumps · values · log n)`: with no filter at all it reads exactly the
//! workflows it skips and returns (plus one), never every workflow.
//!
//! Invariant: the result is the workflows matching every filter, in submit
//! order (reversed when descending), paged by `offset` and `limit`, with
//! `more` set when another one matches.

use crate::error::StorageError;
use crate::labels::{LabelSelector, Labels};
use crate::record::{Millis, WorkflowRecord};
use crate::status::{Priority, WorkflowStatus};
use crate::tables;
use redb::{ReadOnlyTable, ReadTransaction};

/// A status list longer than this is checked on each workflow's record
/// instead of being a dimension: nearly every workflow matches it, and a
/// dimension costs one seek per value at every step.
const STATUS_DIMENSION_VALUES_MAX: usize = 4;

/// Filters of the workflow list (OSMO `GET /api/workflow`). Empty lists
/// filter nothing.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub statuses: Vec<WorkflowStatus>,
    /// Substring of the workflow ID.
    pub name: Option<String>,
    pub pools: Vec<String>,
    pub offset: usize,
    pub limit: usize,
    pub descending: bool,
    /// Submitted by any of these users.
    pub users: Vec<String>,
    /// Carrying any of these tags.
    pub tags: Vec<String>,
    pub priorities: Vec<Priority>,
    /// Submitted at or after this time.
    pub submitted_after: Option<Millis>,
    /// Submitted before this time.
    pub submitted_before: Option<Millis>,
    /// Every selector must match.
    pub labels: Vec<LabelSelector>,
    /// None of these label keys may be present.
    pub no_labels: Vec<String>,
}

/// One indexed filter: the union of one index range per value.
enum Dimension {
    /// A `(key, seq) → id` index and the keys wanted.
    Keyed {
        table: ReadOnlyTable<(&'static str, u64), &'static str>,
        keys: Vec<String>,
    },
    Status {
        table: ReadOnlyTable<(u8, u64), &'static str>,
        codes: Vec<u8>,
    },
    /// Every workflow (`seq → id`), when nothing else narrows the list.
    All {
        table: ReadOnlyTable<u64, &'static str>,
    },
}

/// The first row of `rows` in the list's direction.
fn nearest<I: DoubleEndedIterator>(mut rows: I, descending: bool) -> Option<I::Item> {
    if descending {
        rows.next_back()
    } else {
        rows.next()
    }
}

impl Dimension {
    /// The nearest `(seq, id)` of this dimension at `from` or beyond it in
    /// the list's direction.
    fn seek(&self, from: u64, descending: bool) -> Result<Option<(u64, String)>, StorageError> {
        let mut best: Option<(u64, String)> = None;
        let mut consider = |found: Option<(u64, String)>| {
            if let Some((seq, id)) = found {
                let better = best.as_ref().is_none_or(|(current, _)| {
                    if descending {
                        seq > *current
                    } else {
                        seq < *current
                    }
                });
                if better {
                    best = Some((seq, id));
                }
            }
        };
        // Each index range is walked from `from` in the list's direction.
        let (low, high) = if descending {
            (0, from)
        } else {
            (from, u64::MAX)
        };
        match self {
            Dimension::Keyed { table, keys } => {
                for key in keys {
                    let key = key.as_str();
                    let range = table.range((key, low)..=(key, high))?;
                    consider(
                        nearest(range, descending)
                            .transpose()?
                            .map(|(k, v)| (k.value().1, v.value().to_string())),
                    );
                }
            }
            Dimension::Status { table, codes } => {
                for &code in codes {
                    let range = table.range((code, low)..=(code, high))?;
                    consider(
                        nearest(range, descending)
                            .transpose()?
                            .map(|(k, v)| (k.value().1, v.value().to_string())),
                    );
                }
            }
            Dimension::All { table } => {
                let range = table.range(low..=high)?;
                consider(
                    nearest(range, descending)
                        .transpose()?
                        .map(|(k, v)| (k.value(), v.value().to_string())),
                );
            }
        }
        Ok(best)
    }
}

fn dedup(values: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        if !unique.contains(value) {
            unique.push(value.clone());
        }
    }
    unique
}

/// The inclusive seq window of workflows submitted in
/// `[after, before)`; `None` when no workflow was.
fn seq_window(
    txn: &ReadTransaction,
    after: Option<Millis>,
    before: Option<Millis>,
) -> Result<Option<(u64, u64)>, StorageError> {
    let table = txn.open_table(tables::BY_TIME)?;
    let low = match after {
        Some(after) => match table.range((after, 0)..)?.next() {
            Some(row) => row?.0.value().1,
            None => return Ok(None),
        },
        None => 0,
    };
    let high = match before {
        Some(before) => match table.range(..(before, 0))?.next_back() {
            Some(row) => row?.0.value().1,
            None => return Ok(None),
        },
        None => u64::MAX,
    };
    Ok((low <= high).then_some((low, high)))
}

/// Workflows matching `filter` in submit order, and whether more match.
/// `record(id, with_specs)` reads a workflow (its specs only when it is
/// returned), `labels_of(id)` its labels: the caller's read view checks
/// their rows.
pub(crate) fn list(
    txn: &ReadTransaction,
    filter: &ListFilter,
    record: impl Fn(&str, bool) -> Result<Option<WorkflowRecord>, StorageError>,
    labels_of: impl Fn(&str) -> Result<Labels, StorageError>,
) -> Result<(Vec<WorkflowRecord>, bool), StorageError> {
    let Some((low, high)) = seq_window(txn, filter.submitted_after, filter.submitted_before)?
    else {
        return Ok((Vec::new(), false));
    };
    let mut dimensions = Vec::new();
    if !filter.tags.is_empty() {
        dimensions.push(Dimension::Keyed {
            table: txn.open_table(tables::BY_TAG)?,
            keys: dedup(&filter.tags),
        });
    }
    if !filter.users.is_empty() {
        dimensions.push(Dimension::Keyed {
            table: txn.open_table(tables::BY_USER)?,
            keys: dedup(&filter.users),
        });
    }
    let status_dimension =
        !filter.statuses.is_empty() && filter.statuses.len() <= STATUS_DIMENSION_VALUES_MAX;
    if status_dimension {
        let mut codes: Vec<u8> = filter.statuses.iter().map(|s| s.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        dimensions.push(Dimension::Status {
            table: txn.open_table(tables::BY_STATUS)?,
            codes,
        });
    }
    if !filter.pools.is_empty() {
        dimensions.push(Dimension::Keyed {
            table: txn.open_table(tables::BY_POOL)?,
            keys: dedup(&filter.pools),
        });
    }
    if dimensions.is_empty() {
        dimensions.push(Dimension::All {
            table: txn.open_table(tables::BY_SUBMIT)?,
        });
    }
    let status_on_record = !filter.statuses.is_empty() && !status_dimension;
    let windowed = filter.submitted_after.is_some() || filter.submitted_before.is_some();
    let record_checked = status_on_record || windowed || !filter.priorities.is_empty();
    let labels_checked = !filter.labels.is_empty() || !filter.no_labels.is_empty();

    let record_matches = |workflow: &WorkflowRecord| {
        (!status_on_record || filter.statuses.contains(&workflow.status))
            && (filter.priorities.is_empty() || filter.priorities.contains(&workflow.priority))
            && filter
                .submitted_after
                .is_none_or(|after| workflow.submit_time >= after)
            && filter
                .submitted_before
                .is_none_or(|before| workflow.submit_time < before)
    };

    let mut matched = Vec::new();
    let mut skipped = 0;
    let mut more = false;
    let outside = |seq: u64| seq < low || seq > high;
    let mut candidate = if filter.descending { high } else { low };
    'candidates: loop {
        // Leapfrog: until every dimension holds `candidate`.
        let mut agreed = 0;
        let mut at = 0;
        let mut id = String::new();
        while agreed < dimensions.len() {
            let Some((seq, found)) = dimensions[at].seek(candidate, filter.descending)? else {
                break 'candidates;
            };
            if seq == candidate {
                agreed += 1;
            } else {
                candidate = seq;
                agreed = 1;
            }
            if outside(candidate) {
                break 'candidates;
            }
            id = found;
            at = (at + 1) % dimensions.len();
        }
        let next = if filter.descending {
            candidate.checked_sub(1)
        } else {
            candidate.checked_add(1)
        };
        let mut keep = filter
            .name
            .as_ref()
            .is_none_or(|name| id.contains(name.as_str()));
        if keep && labels_checked {
            let labels = labels_of(&id)?;
            keep = filter
                .labels
                .iter()
                .all(|selector| selector.matches(&labels))
                && filter.no_labels.iter().all(|key| !labels.contains_key(key));
        }
        if keep && record_checked {
            keep = record(&id, false)?.as_ref().is_some_and(record_matches);
        }
        if keep {
            if skipped < filter.offset {
                skipped += 1;
            } else if matched.len() == filter.limit {
                more = true;
                break;
            } else {
                matched.extend(record(&id, true)?);
            }
        }
        match next {
            Some(next) if !outside(next) => candidate = next,
            _ => break,
        }
    }
    Ok((matched, more))
}
