//! Chaos: a three-node cluster of real `gantry server` processes whose
//! leader is SIGKILLed again and again (at least 20 times across the three
//! nodes) while client threads submit, query and cancel workflows through
//! random nodes.
//!
//! The nodes run without an operator, so a workflow stays PENDING until it
//! is canceled (then FAILED_CANCELED): the sequential model below is exact.
//!
//! Afterwards it checks that
//! 1. every acknowledged submit is present on every node (queried one by
//!    one on each node), and the three nodes list the same workflows;
//! 2. IDs are unique and gap-free per name (`<name>-1..N`, no holes);
//! 3. the recorded history of submits, queries, cancels and state listings
//!    is linearizable, by stateright's `LinearizabilityTester` against
//!    [`Gantry`], a `SequentialSpec`.
//!
//! History and indeterminate operations: every operation takes a ticket
//! from one atomic clock before its request is sent and another after its
//! answer arrived, so the recorded order is a valid real-time order (each
//! interval only widens). A request that failed before it was sent (connect
//! refused: the node is down) is retried on another node under the same
//! ticket. A submit or cancel whose outcome is unknown (the connection
//! broke after sending, or a 5xx) may have been applied, at any later time:
//! it is given to the tester as an invocation without a return, on a
//! logical thread of its own (a thread may have one operation in flight, and
//! the client goes on), which the tester may linearize anywhere after its
//! invocation or leave out. A query with no answer constrains nothing and
//! is left out.
//!
//! Marks keep that search small: a submit's spec carries its ticket in a
//! comment, a cancel its ticket in the cancel message (stored as the tasks'
//! failure message). After the run, each stored workflow no acknowledged
//! submit explains must bear the mark of a submit with unknown outcome, and
//! each canceled one no acknowledged cancel explains the mark of a cancel
//! with unknown outcome (else the test fails). Operations with unknown
//! outcome whose mark is nowhere changed nothing (never applied, or a
//! rejection, which writes nothing) and are left out, which is exact; the
//! others stay in flight. Without this, the no-op ones (503 "not the
//! leader" during each election) make the depth-first search try their
//! permutations at every dead end.
//!
//! Windows: the tester's search is a depth-first search over
//! interleavings, exponential in the number of operations it has to
//! reorder. After each kill-restart cycle the clients pause; once all are
//! idle (every request answered or failed) and the cluster has had 300 ms
//! to settle, the test lists the whole state through one node (a
//! linearizable read) and records it as a `Snapshot` operation. The history
//! is checked window by window: each window starts from the state the
//! previous snapshot returned and ends with the next snapshot, which must
//! match the model exactly. The windows chain into one linearization of the
//! whole run provided an operation left in flight in one window does not
//! take effect in a later one: no request is pending anywhere at a cut (the
//! client timeout exceeds the server's election wait and forward retries),
//! and the new leader's first commit settled every entry of earlier terms.
//! (Were it to happen, the later window would fail, not pass wrongly.)
//!
//! Knobs: `GANTRY_CHAOS_KILLS` (default 21), `GANTRY_CHAOS_SEED`,
//! `GANTRY_CHAOS_KEEP=1` (keep data directories and server logs),
//! `GANTRY_CHAOS_RESTART=plain` (restart without `--bootstrap`/`--join`).

mod common;

use common::{DevServer, BINARY};
use serde_json::Value;
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Workflow names: IDs are counted per name.
const NAMES: [&str; 2] = ["chaos-alpha", "chaos-beta"];
/// What every chaos workflow ID contains (for the listings).
const ID_MARK: &str = "chaos-";
const CLIENTS: usize = 4;
const NODES: usize = 3;
/// Leader kills per run, unless `GANTRY_CHAOS_KILLS` says otherwise.
const KILLS_DEFAULT: usize = 21;
/// Longer than anything a server may spend on one request (election wait,
/// forward retries), so a client gives up only when a connection breaks.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Load between two kills.
const LOAD_BETWEEN_KILLS: Duration = Duration::from_millis(500);
/// Logical threads for operations left in flight start here.
const IN_FLIGHT_THREADS: usize = 1_000;
/// The checker's thread id for snapshots.
const SNAPSHOT_THREAD: usize = CLIENTS;

/// A spec whose stored text names the operation that submitted it.
fn spec_yaml(name: &str, ticket: u64) -> String {
    format!(
        "{SUBMIT_MARK}{ticket}\nworkflow:\n  name: {name}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n"
    )
}

/// Marks in what the server stores: the submitting operation's ticket in
/// the spec text, the canceling one's in the cancel message (which becomes
/// the tasks' failure message).
const SUBMIT_MARK: &str = "# chaos op ";
const CANCEL_MARK: &str = "chaos-op-";

/// The ticket after `mark` in `text`, if any.
fn ticket_after(text: &str, mark: &str) -> Option<u64> {
    let start = text.find(mark)? + mark.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// The sequential specification.

/// A workflow ID: `NAMES[name]-number`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Wid {
    name: usize,
    number: u64,
}

impl Wid {
    fn text(self) -> String {
        format!("{}-{}", NAMES[self.name], self.number)
    }

    fn parse(text: &str) -> Option<Wid> {
        let (name, number) = text.rsplit_once('-')?;
        Some(Wid {
            name: NAMES.iter().position(|known| *known == name)?,
            number: number.parse().ok()?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Canceled,
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        match text {
            "PENDING" => Some(Status::Pending),
            "FAILED_CANCELED" => Some(Status::Canceled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Submit(usize),
    Query(Wid),
    Cancel(Wid),
    /// List every workflow with its status.
    Snapshot,
}

#[derive(Clone, Debug, PartialEq)]
enum Ret {
    Submitted(u64),
    Found(Status),
    NotFound,
    Canceled,
    AlreadyFinished,
    State(BTreeMap<Wid, Status>),
    /// An answer the model never gives (an unexpected HTTP status or body):
    /// it makes the history fail the check, with this text in the report.
    Odd(String),
}

/// The control plane as one sequential object: a counter per name and the
/// status of every workflow.
#[derive(Clone, Debug, Default)]
struct Gantry {
    next: [u64; NAMES.len()],
    workflows: BTreeMap<Wid, Status>,
}

impl Gantry {
    /// The model state a snapshot shows (its IDs are gap-free: the window
    /// that ended with it was checked against this model).
    fn from_state(state: &BTreeMap<Wid, Status>) -> Gantry {
        let mut next = [0; NAMES.len()];
        for wid in state.keys() {
            next[wid.name] = next[wid.name].max(wid.number);
        }
        Gantry {
            next,
            workflows: state.clone(),
        }
    }
}

impl SequentialSpec for Gantry {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Submit(name) => {
                self.next[*name] += 1;
                let number = self.next[*name];
                self.workflows.insert(
                    Wid {
                        name: *name,
                        number,
                    },
                    Status::Pending,
                );
                Ret::Submitted(number)
            }
            Op::Query(wid) => match self.workflows.get(wid) {
                Some(status) => Ret::Found(*status),
                None => Ret::NotFound,
            },
            Op::Cancel(wid) => match self.workflows.get_mut(wid) {
                None => Ret::NotFound,
                Some(status @ Status::Pending) => {
                    *status = Status::Canceled;
                    Ret::Canceled
                }
                Some(Status::Canceled) => Ret::AlreadyFinished,
            },
            Op::Snapshot => Ret::State(self.workflows.clone()),
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster.

fn gantry(args: &[&str]) {
    let status = Command::new(BINARY)
        .args(args)
        .status()
        .expect("run gantry");
    assert!(status.success(), "gantry {args:?} failed");
}

fn https_client(ca: &[u8], timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
        .tls_built_in_root_certs(false)
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .build()
        .unwrap()
}

struct Node {
    data: PathBuf,
    /// Fixed after the first start: a member's addresses are in the Raft
    /// membership, so a restart must listen where it did before.
    api: String,
    peer: String,
    id: u64,
    server: Option<DevServer>,
}

struct Cluster {
    pki: PathBuf,
    token: String,
    admin: reqwest::blocking::Client,
    nodes: Vec<Node>,
    /// Admin reads answered 5xx (or not at all) and tried again.
    retries: AtomicUsize,
}

impl Cluster {
    fn args(&self, index: usize, api: &str, peer: &str, extra: &[String]) -> Vec<String> {
        let pem = |name: &str| self.pki.join(name).display().to_string();
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            api.into(),
            "--peer-listen".into(),
            peer.into(),
            "--tls-ca".into(),
            pem("ca.pem"),
            "--tls-cert".into(),
            pem(&format!("node{}.pem", index + 1)),
            "--tls-key".into(),
            pem(&format!("node{}-key.pem", index + 1)),
        ];
        args.extend(extra.iter().cloned());
        args
    }

    /// The flags node `index` runs with: `--bootstrap` for the first node,
    /// `--join` through it for the others. A restart repeats them, as a
    /// service manager would, unless `GANTRY_CHAOS_RESTART=plain`.
    fn role_flags(&self, index: usize, restart: bool) -> Vec<String> {
        if restart && std::env::var("GANTRY_CHAOS_RESTART").as_deref() == Ok("plain") {
            Vec::new()
        } else if index == 0 {
            vec!["--bootstrap".into()]
        } else {
            vec!["--join".into(), self.nodes[0].peer.clone()]
        }
    }

    fn start(&self, index: usize, api: &str, peer: &str, restart: bool) -> DevServer {
        let mut flags = self.role_flags(index, restart);
        flags.extend(common::shared_store_flags(&self.nodes[index].data));
        let args = self.args(index, api, peer, &flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(&self.nodes[index].data, &args)
    }

    fn restart(&mut self, index: usize) {
        let node = &self.nodes[index];
        let api = node.api.trim_start_matches("https://").to_string();
        let server = self.start(index, &api, &node.peer.clone(), true);
        self.nodes[index].server = Some(server);
    }

    fn get(&self, index: usize, path: &str) -> Result<(u16, Value), String> {
        let response = self
            .admin
            .get(format!("{}{path}", self.nodes[index].api))
            .bearer_auth(&self.token)
            .send()
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().map_err(|error| error.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// `get`, tried again (up to 50 times) while the node answers 5xx or
    /// not at all: for checks that are about content, not availability.
    fn get_retrying(&self, index: usize, path: &str) -> (u16, Value) {
        let mut attempt = 0;
        loop {
            let answer = self.get(index, path);
            match answer {
                Ok((status, body)) if status < 500 => return (status, body),
                _ if attempt < 50 => {
                    attempt += 1;
                    self.retries.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => panic!("GET {path} on node {}: {other:?}", index + 1),
            }
        }
    }

    fn members(&self, index: usize) -> Option<Value> {
        match self.get(index, "/api/cluster/members") {
            Ok((200, members)) => Some(members),
            _ => None,
        }
    }

    fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|node| node.id == id).unwrap()
    }

    /// The node that reports itself as leader, as `from` names it.
    fn leader_seen_by(&self, from: usize) -> Option<usize> {
        let leader = self.members(from)?["leader_id"].as_u64()?;
        let index = self.index_of(leader);
        self.nodes[index].server.as_ref()?;
        let members = self.members(index)?;
        let own = members["members"]
            .as_array()?
            .iter()
            .find(|member| member["id"].as_u64() == Some(leader))?
            .clone();
        (own["role"] == "LEADER").then_some(index)
    }

    fn wait_leader(&self, among: &[usize], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            for &from in among {
                if let Some(leader) = self.leader_seen_by(from) {
                    if among.contains(&leader) {
                        return leader;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `index` follows a leader that hears from it and has
    /// replicated to it.
    fn wait_rejoined(&self, index: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let id = self.nodes[index].id;
        loop {
            let back = (|| {
                let leader = self.leader_seen_by(index)?;
                let members = self.members(leader)?;
                let entry = members["members"]
                    .as_array()?
                    .iter()
                    .find(|member| member["id"].as_u64() == Some(id))?
                    .clone();
                let fresh = leader == index
                    || (entry["voter"] == true
                        && entry["role"] == "FOLLOWER"
                        && entry["match_index"].is_u64()
                        && entry["last_contact_ms"]
                            .as_u64()
                            .is_some_and(|ms| ms < 1_000));
                fresh.then_some(())
            })();
            if back.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not rejoin",
                index + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every chaos workflow and its status, through node `index` (paged).
    fn listing(&self, index: usize) -> Result<BTreeMap<Wid, Status>, String> {
        let mut state = BTreeMap::new();
        let mut offset = 0;
        loop {
            let (status, body) = self.get_retrying(
                index,
                &format!("/api/workflow?name={ID_MARK}&limit=1000&offset={offset}"),
            );
            if status != 200 {
                return Err(format!(
                    "listing through node {}: {status} {body}",
                    index + 1
                ));
            }
            let page = body["workflows"].as_array().cloned().unwrap_or_default();
            for workflow in &page {
                let name = workflow["name"].as_str().unwrap_or_default();
                let wid = Wid::parse(name).ok_or_else(|| format!("odd ID {name}"))?;
                let text = workflow["status"].as_str().unwrap_or_default();
                let status =
                    Status::parse(text).ok_or_else(|| format!("{name} has status {text}"))?;
                if state.insert(wid, status).is_some() {
                    return Err(format!("{name} listed twice"));
                }
            }
            offset += page.len();
            if body["more_entries"] != true {
                return Ok(state);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// One operation as a client saw it: tickets from one clock before sending
/// and after the answer; `ret` is `None` when the outcome is unknown.
#[derive(Clone, Debug)]
struct Record {
    thread: usize,
    op: Op,
    invoked: u64,
    returned: u64,
    ret: Option<Ret>,
}

struct Shared {
    urls: Vec<String>,
    token: String,
    ca: Vec<u8>,
    clock: AtomicU64,
    stop: AtomicBool,
    pause: AtomicBool,
    idle: AtomicUsize,
    /// IDs acknowledged so far (targets for queries and cancels).
    known: Mutex<Vec<Wid>>,
    /// Requests never sent (connection refused) and retried elsewhere.
    refused: AtomicUsize,
    /// Why outcomes were unknown: how often, and the longest such request.
    unknown: Mutex<BTreeMap<String, (usize, Duration)>>,
}

/// xorshift64*: enough randomness for choosing operations and nodes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn choose_op(rng: &mut Rng, shared: &Shared) -> Op {
    let known = shared.known.lock().unwrap();
    let roll = rng.below(100);
    if known.is_empty() || roll < 40 {
        return Op::Submit(rng.below(NAMES.len() as u64) as usize);
    }
    // Mostly IDs seen acknowledged; sometimes the next one a name will get
    // (absent, or present through a concurrent or unacknowledged submit).
    let target = if rng.below(5) == 0 {
        let name = rng.below(NAMES.len() as u64) as usize;
        let highest = known
            .iter()
            .filter(|wid| wid.name == name)
            .map(|wid| wid.number)
            .max()
            .unwrap_or(0);
        Wid {
            name,
            number: highest + 1 + rng.below(2),
        }
    } else {
        known[rng.below(known.len() as u64) as usize]
    };
    if roll < 75 {
        Op::Query(target)
    } else {
        Op::Cancel(target)
    }
}

fn send(
    http: &reqwest::blocking::Client,
    shared: &Shared,
    url: &str,
    op: &Op,
    ticket: u64,
) -> reqwest::Result<reqwest::blocking::Response> {
    let request = match op {
        Op::Submit(name) => http
            .post(format!("{url}/api/pool/default/workflow"))
            .json(&serde_json::json!({ "file": spec_yaml(NAMES[*name], ticket) })),
        Op::Query(wid) => http.get(format!(
            "{url}/api/workflow/{}?skip_groups=true",
            wid.text()
        )),
        Op::Cancel(wid) => http.post(format!(
            "{url}/api/workflow/{}/cancel?message={CANCEL_MARK}{ticket}",
            wid.text()
        )),
        Op::Snapshot => unreachable!("snapshots are taken by the chaos thread"),
    };
    request.bearer_auth(&shared.token).send()
}

/// The answer as the model would give it; `Err(why)` when the outcome is
/// unknown.
fn interpret(op: &Op, response: reqwest::blocking::Response) -> Result<Ret, String> {
    let status = response.status().as_u16();
    // The status arrived but the body did not (the node died in between):
    // what a submit returned, or why a cancel was refused, is unknown.
    let text = response
        .text()
        .map_err(|error| format!("body lost after {status}: {error}"))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status >= 500 {
        return Err(format!(
            "{status} {}",
            body["message"].as_str().unwrap_or_default()
        ));
    }
    let ret = match (op, status) {
        (Op::Submit(name), 200) => match body["name"].as_str().and_then(Wid::parse) {
            Some(wid) if wid.name == *name => Ret::Submitted(wid.number),
            _ => Ret::Odd(format!("submit answered {body}")),
        },
        (Op::Query(_), 200) => match body["status"].as_str().and_then(Status::parse) {
            Some(status) => Ret::Found(status),
            None => Ret::Odd(format!("query answered {body}")),
        },
        (Op::Query(_) | Op::Cancel(_), 404) => Ret::NotFound,
        (Op::Cancel(_), 200) => Ret::Canceled,
        (Op::Cancel(_), 400)
            if body["message"]
                .as_str()
                .is_some_and(|message| message.contains("already finished")) =>
        {
            Ret::AlreadyFinished
        }
        _ => Ret::Odd(format!("{op:?} answered {status}: {body}")),
    };
    Ok(ret)
}

fn client(index: usize, shared: Arc<Shared>, seed: u64) -> Vec<Record> {
    let http = https_client(&shared.ca, CLIENT_TIMEOUT);
    let mut rng = Rng(seed | 1);
    let mut records = Vec::new();
    while !shared.stop.load(SeqCst) {
        if shared.pause.load(SeqCst) {
            shared.idle.fetch_add(1, SeqCst);
            while shared.pause.load(SeqCst) && !shared.stop.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            shared.idle.fetch_sub(1, SeqCst);
            continue;
        }
        let op = choose_op(&mut rng, &shared);
        let invoked = shared.clock.fetch_add(1, SeqCst);
        let sent_at = Instant::now();
        let mut node = rng.below(NODES as u64) as usize;
        let mut refusals = 0;
        let outcome = loop {
            match send(&http, &shared, &shared.urls[node], &op, invoked) {
                Ok(response) => break interpret(&op, response),
                // Not sent: the node is down. Same operation, another node.
                Err(error) if error.is_connect() && refusals < 200 => {
                    shared.refused.fetch_add(1, SeqCst);
                    refusals += 1;
                    node = (node + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Sent, and the connection broke (or timed out): unknown.
                Err(error) => break Err(format!("transport: {error}")),
            }
        };
        let ret = match outcome {
            Ok(ret) => Some(ret),
            Err(why) => {
                // Digits (addresses, IDs, terms) vary: tally by the words.
                let kind: String = why
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(160)
                    .collect();
                let mut unknown = shared.unknown.lock().unwrap();
                let (count, slowest) = unknown.entry(kind).or_default();
                *count += 1;
                *slowest = (*slowest).max(sent_at.elapsed());
                None
            }
        };
        let returned = shared.clock.fetch_add(1, SeqCst);
        if let Some(Ret::Submitted(number)) = ret {
            if let Op::Submit(name) = op {
                shared.known.lock().unwrap().push(Wid { name, number });
            }
        }
        records.push(Record {
            thread: index,
            op,
            invoked,
            returned,
            ret,
        });
        std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
    }
    records
}

// ---------------------------------------------------------------------------
// Checking the history.

struct WindowCheck {
    ops: usize,
    in_flight: usize,
    dropped: usize,
    took: Duration,
}

/// Checks the operations between two snapshots: linearizable from the state
/// `start` shows, ending in the state `end` shows.
fn check_window(
    number: usize,
    start: &BTreeMap<Wid, Status>,
    ops: &[&Record],
    end: &Record,
    applied: &BTreeSet<u64>,
) -> WindowCheck {
    let began = Instant::now();
    enum Event<'a> {
        Invoke(usize, &'a Op),
        Return(usize, &'a Ret),
    }
    let mut events: Vec<(u64, Event)> = Vec::new();
    let mut in_flight = 0;
    let mut dropped = 0;
    for record in ops.iter().copied().chain(std::iter::once(end)) {
        assert!(
            record.returned < end.invoked || std::ptr::eq(record, end),
            "window {number} is not quiescent: {record:?} still ran at its snapshot"
        );
        match &record.ret {
            Some(ret) => {
                events.push((record.invoked, Event::Invoke(record.thread, &record.op)));
                events.push((record.returned, Event::Return(record.thread, ret)));
            }
            // An unanswered query changed nothing and showed nothing.
            None if matches!(record.op, Op::Query(_)) => {}
            // No stored workflow bears its mark: it changed nothing (never
            // applied, or rejected, which writes nothing).
            None if !applied.contains(&record.invoked) => dropped += 1,
            // Applied, at some time after its invocation.
            None => {
                events.push((
                    record.invoked,
                    Event::Invoke(IN_FLIGHT_THREADS + in_flight, &record.op),
                ));
                in_flight += 1;
            }
        }
    }
    events.sort_by_key(|(ticket, _)| *ticket);
    let mut tester = LinearizabilityTester::new(Gantry::from_state(start));
    for (_, event) in &events {
        let recorded = match event {
            Event::Invoke(thread, op) => tester.on_invoke(*thread, (*op).clone()).map(|_| ()),
            Event::Return(thread, ret) => tester.on_return(*thread, (*ret).clone()).map(|_| ()),
        };
        recorded.unwrap_or_else(|error| panic!("window {number}: bad history: {error}"));
    }
    if !tester.is_consistent() {
        panic!(
            "window {number} is not linearizable ({in_flight} in flight):\n{}",
            describe_window(start, ops, end)
        );
    }
    WindowCheck {
        ops: ops.len(),
        in_flight,
        dropped,
        took: began.elapsed(),
    }
}

/// The operations of a window, one per line, for a failure report.
fn describe_window(start: &BTreeMap<Wid, Status>, ops: &[&Record], end: &Record) -> String {
    let mut text = format!("  start: {} workflows\n", start.len());
    for record in ops {
        text.push_str(&format!(
            "  [{:>6}..{:>6}] client {} {:?} -> {:?}\n",
            record.invoked, record.returned, record.thread, record.op, record.ret
        ));
    }
    text.push_str(&format!("  end snapshot: {:?}", end.ret));
    text
}

struct HistoryCheck {
    windows: usize,
    largest: usize,
    in_flight: usize,
    dropped: usize,
    slowest: Duration,
}

/// How long one window's search may take. stateright's search keeps no
/// memo, so on a history that is not linearizable (or an answer the model
/// never gives) it tries every interleaving, which is exponential in the
/// window's concurrent operations: a failing run must say so, not spin
/// until the CI limit. Passing windows take milliseconds.
const WINDOW_CHECK_LIMIT: Duration = Duration::from_secs(120);

fn check_history(records: &[Record], applied: &BTreeSet<u64>) -> HistoryCheck {
    // An answer the model never gives fails every interleaving: report it
    // before searching them all.
    let odd: Vec<String> = records
        .iter()
        .filter_map(|record| match &record.ret {
            Some(Ret::Odd(text)) => Some(format!(
                "  [{:>6}..{:>6}] client {} {:?}: {text}",
                record.invoked, record.returned, record.thread, record.op
            )),
            _ => None,
        })
        .collect();
    assert!(
        odd.is_empty(),
        "answers the model never gives:\n{}",
        odd.join("\n")
    );
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|record| record.invoked);
    let snapshots: Vec<usize> = sorted
        .iter()
        .enumerate()
        .filter(|(_, record)| record.op == Op::Snapshot)
        .map(|(position, _)| position)
        .collect();
    assert_eq!(snapshots[0], 0, "the history starts with a snapshot");
    let mut totals = HistoryCheck {
        windows: 0,
        largest: 0,
        in_flight: 0,
        dropped: 0,
        slowest: Duration::ZERO,
    };
    for (number, pair) in snapshots.windows(2).enumerate() {
        let Some(Ret::State(start)) = &sorted[pair[0]].ret else {
            unreachable!()
        };
        let checked = check_window_within(
            number,
            start.clone(),
            sorted[pair[0] + 1..pair[1]]
                .iter()
                .map(|record| (*record).clone())
                .collect(),
            sorted[pair[1]].clone(),
            applied.clone(),
        );
        totals.windows += 1;
        totals.largest = totals.largest.max(checked.ops);
        totals.in_flight += checked.in_flight;
        totals.dropped += checked.dropped;
        totals.slowest = totals.slowest.max(checked.took);
    }
    assert_eq!(
        *snapshots.last().unwrap(),
        sorted.len() - 1,
        "the history ends with a snapshot"
    );
    totals
}

/// [`check_window`] on a thread of its own (a deep recursion: large
/// stack), given up after [`WINDOW_CHECK_LIMIT`] with the window's
/// operations in the failure message. The abandoned search ends with the
/// test process.
fn check_window_within(
    number: usize,
    start: BTreeMap<Wid, Status>,
    ops: Vec<Record>,
    end: Record,
    applied: BTreeSet<u64>,
) -> WindowCheck {
    let (sender, receiver) = std::sync::mpsc::channel();
    let (start_copy, ops_copy, end_copy) = (start.clone(), ops.clone(), end.clone());
    std::thread::Builder::new()
        .name(format!("window-{number}"))
        .stack_size(512 << 20)
        .spawn(move || {
            let refs: Vec<&Record> = ops_copy.iter().collect();
            let _ = sender.send(check_window(
                number,
                &start_copy,
                &refs,
                &end_copy,
                &applied,
            ));
        })
        .expect("spawn the window check");
    match receiver.recv_timeout(WINDOW_CHECK_LIMIT) {
        Ok(checked) => checked,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let refs: Vec<&Record> = ops.iter().collect();
            panic!(
                "window {number}: no linearization found within {} s (not linearizable, or too many concurrent operations to search):\n{}",
                WINDOW_CHECK_LIMIT.as_secs(),
                describe_window(&start, &refs, &end)
            )
        }
        // The check panicked: its message is above.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("window {number} failed its check (see above)")
        }
    }
}

fn summary(durations: &[Duration]) -> String {
    let millis: Vec<u128> = durations.iter().map(Duration::as_millis).collect();
    let total: u128 = millis.iter().sum();
    format!(
        "min {} ms, mean {} ms, max {} ms",
        millis.iter().min().unwrap_or(&0),
        total / millis.len().max(1) as u128,
        millis.iter().max().unwrap_or(&0)
    )
}

// ---------------------------------------------------------------------------

#[test]
fn sigkilled_leaders_under_load_lose_nothing_and_stay_linearizable() {
    let began = Instant::now();
    let kills: usize = std::env::var("GANTRY_CHAOS_KILLS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let seed: u64 = std::env::var("GANTRY_CHAOS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: seed {seed} (GANTRY_CHAOS_SEED), {kills} kills (GANTRY_CHAOS_KILLS)");

    // GANTRY_CHAOS_KEEP=1 keeps the data directories and server logs.
    let dir = tempfile::tempdir().unwrap();
    let (root, _dir) = if std::env::var_os("GANTRY_CHAOS_KEEP").is_some() {
        let root = dir.keep();
        eprintln!("chaos: keeping {} (GANTRY_CHAOS_KEEP)", root.display());
        (root, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let pki = root.join("pki");
    let pki_text = pki.to_str().unwrap();
    gantry(&["tls", "ca", "create", "--out", pki_text]);
    for index in 1..=NODES {
        let name = format!("node{index}");
        let ip = format!("127.0.0.{index}");
        gantry(&[
            "tls", "cert", "create", "--ca", pki_text, "--name", &name, "--kind", "server", "--ip",
            &ip, "--out", pki_text,
        ]);
    }
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let mut cluster = Cluster {
        pki: pki.clone(),
        token: String::new(),
        admin: https_client(&ca, Duration::from_secs(5)),
        retries: AtomicUsize::new(0),
        nodes: (0..NODES)
            .map(|index| Node {
                data: root.join(format!("node{}", index + 1)),
                api: String::new(),
                peer: String::new(),
                id: 0,
                server: None,
            })
            .collect(),
    };

    // Start on ephemeral ports, then keep each node's ports for restarts.
    for index in 0..NODES {
        let ip = format!("127.0.0.{}", index + 1);
        let server = cluster.start(index, &format!("{ip}:0"), &format!("{ip}:0"), false);
        cluster.nodes[index].api = server.url.clone();
        cluster.nodes[index].server = Some(server);
        if index == 0 {
            cluster.token =
                std::fs::read_to_string(cluster.nodes[0].data.join("bootstrap-admin-token"))
                    .unwrap();
        }
        let members = cluster.members(index).expect("members");
        let id = members["node_id"].as_u64().unwrap();
        let own = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|member| member["id"].as_u64() == Some(id))
            .unwrap()
            .clone();
        cluster.nodes[index].id = id;
        cluster.nodes[index].peer = own["peer_address"].as_str().unwrap().to_string();
        assert_eq!(own["api_url"], cluster.nodes[index].api.as_str());
    }
    for index in 0..NODES {
        let members = cluster.members(index).unwrap();
        let list = members["members"].as_array().unwrap();
        assert_eq!(list.len(), NODES, "{members}");
        assert!(
            list.iter().all(|member| member["voter"] == true),
            "{members}"
        );
    }
    let all: Vec<usize> = (0..NODES).collect();
    cluster.wait_leader(&all, Duration::from_secs(30));

    let shared = Arc::new(Shared {
        urls: cluster.nodes.iter().map(|node| node.api.clone()).collect(),
        token: cluster.token.clone(),
        ca: ca.clone(),
        clock: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        idle: AtomicUsize::new(0),
        known: Mutex::new(Vec::new()),
        refused: AtomicUsize::new(0),
        unknown: Mutex::new(BTreeMap::new()),
    });
    let mut snapshots: Vec<Record> = Vec::new();
    let take_snapshot = |cluster: &Cluster, through: usize, snapshots: &mut Vec<Record>| {
        let invoked = shared.clock.fetch_add(1, SeqCst);
        let state = cluster
            .listing(through)
            .unwrap_or_else(|error| panic!("snapshot: {error}"));
        let returned = shared.clock.fetch_add(1, SeqCst);
        snapshots.push(Record {
            thread: SNAPSHOT_THREAD,
            op: Op::Snapshot,
            invoked,
            returned,
            ret: Some(Ret::State(state)),
        });
    };
    take_snapshot(&cluster, 0, &mut snapshots);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let shared = shared.clone();
            let seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1));
            std::thread::spawn(move || client(index, shared, seed))
        })
        .collect();

    let load_began = Instant::now();
    let mut kills_per_node = [0usize; NODES];
    let mut elections = Vec::new();
    let mut rejoins = Vec::new();
    for kill in 0..kills {
        std::thread::sleep(LOAD_BETWEEN_KILLS);
        let leader = cluster.wait_leader(&all, Duration::from_secs(30));
        let killed_id = cluster.nodes[leader].id;
        let killed_at = Instant::now();
        cluster.nodes[leader].server.take().unwrap().kill9();
        kills_per_node[leader] += 1;
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let new_leader = cluster.wait_leader(&survivors, Duration::from_secs(30));
        let elected = killed_at.elapsed();
        assert_ne!(cluster.nodes[new_leader].id, killed_id);
        cluster.restart(leader);
        cluster.wait_rejoined(leader, Duration::from_secs(60));
        let rejoined = killed_at.elapsed();
        eprintln!(
            "chaos: kill {:>2}: node {} (id {killed_id}) killed; node {} leads after {} ms; back after {} ms",
            kill + 1,
            leader + 1,
            new_leader + 1,
            elected.as_millis(),
            rejoined.as_millis()
        );
        elections.push(elected);
        rejoins.push(rejoined);

        // A quiescent cut: every client idle, then the whole state.
        shared.pause.store(true, SeqCst);
        let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(30);
        while shared.idle.load(SeqCst) < CLIENTS {
            assert!(Instant::now() < deadline, "clients did not pause");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(300));
        take_snapshot(&cluster, kill % NODES, &mut snapshots);
        shared.pause.store(false, SeqCst);
    }
    std::thread::sleep(LOAD_BETWEEN_KILLS);
    shared.stop.store(true, SeqCst);
    let mut records: Vec<Record> = Vec::new();
    for handle in clients {
        records.extend(handle.join().expect("client thread"));
    }
    let load_time = load_began.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    take_snapshot(&cluster, 0, &mut snapshots);

    // 1. Every acknowledged submit is on every node; the nodes agree.
    let acknowledged: Vec<Wid> = records
        .iter()
        .filter_map(|record| match (&record.op, &record.ret) {
            (Op::Submit(name), Some(Ret::Submitted(number))) => Some(Wid {
                name: *name,
                number: *number,
            }),
            _ => None,
        })
        .collect();
    let unique: BTreeSet<Wid> = acknowledged.iter().copied().collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "an ID was acknowledged twice"
    );
    let listings: Vec<BTreeMap<Wid, Status>> = (0..NODES)
        .map(|index| cluster.listing(index).unwrap())
        .collect();
    for (index, listing) in listings.iter().enumerate() {
        assert_eq!(
            listing,
            &listings[0],
            "node {} lists other workflows than node 1",
            index + 1
        );
        let missing: Vec<String> = unique
            .iter()
            .filter(|wid| !listing.contains_key(wid))
            .map(|wid| wid.text())
            .collect();
        assert!(
            missing.is_empty(),
            "node {} lacks acknowledged {missing:?}",
            index + 1
        );
    }
    let queried = Instant::now();
    std::thread::scope(|scope| {
        for index in 0..NODES {
            let cluster = &cluster;
            let unique = &unique;
            scope.spawn(move || {
                for wid in unique {
                    let (status, body) = cluster.get_retrying(
                        index,
                        &format!("/api/workflow/{}?skip_groups=true", wid.text()),
                    );
                    assert_eq!(
                        status,
                        200,
                        "node {} lacks {}: {body}",
                        index + 1,
                        wid.text()
                    );
                    assert_eq!(body["name"], wid.text().as_str());
                }
            });
        }
    });
    let query_time = queried.elapsed();

    // 2. IDs are gap-free per name: NAME-1..N, all stored.
    for (name, text) in NAMES.iter().enumerate() {
        let numbers: Vec<u64> = listings[0]
            .keys()
            .filter(|wid| wid.name == name)
            .map(|wid| wid.number)
            .collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "IDs of {text} are not gap-free");
    }

    // Which operations with unknown outcome were applied: the marks on
    // the workflows no answer explains.
    let unknown_ops: BTreeMap<u64, &Record> = records
        .iter()
        .filter(|record| record.ret.is_none())
        .map(|record| (record.invoked, record))
        .collect();
    let acknowledged_cancels: BTreeSet<Wid> = records
        .iter()
        .filter_map(|record| match (&record.op, &record.ret) {
            (Op::Cancel(wid), Some(Ret::Canceled)) => Some(*wid),
            _ => None,
        })
        .collect();
    let mut applied = BTreeSet::new();
    for (wid, status) in &listings[0] {
        let (path, mark, expected) = if !unique.contains(wid) {
            (
                format!("/api/workflow/{}/spec?use_template=true", wid.text()),
                SUBMIT_MARK,
                Op::Submit(wid.name),
            )
        } else if *status == Status::Canceled && !acknowledged_cancels.contains(wid) {
            (
                format!("/api/workflow/{}", wid.text()),
                CANCEL_MARK,
                Op::Cancel(*wid),
            )
        } else {
            continue;
        };
        let (_, body) = cluster.get_retrying(0, &path);
        let text = body.to_string();
        let ticket = ticket_after(&text, mark)
            .unwrap_or_else(|| panic!("{} has no mark {mark:?}: {text}", wid.text()));
        match unknown_ops.get(&ticket) {
            Some(record) if record.op == expected => {
                applied.insert(ticket);
            }
            other => panic!(
                "{} ({status:?}) is explained by no operation with an unknown outcome: ticket {ticket} is {other:?}",
                wid.text()
            ),
        }
    }
    for node in &mut cluster.nodes {
        if let Some(server) = node.server.take() {
            server.stop();
        }
    }

    // 3. The history is linearizable.
    records.extend(snapshots);
    let total_ops = records.len();
    let unknown = records.iter().filter(|record| record.ret.is_none()).count();
    let checking = Instant::now();
    let checked = check_history(&records, &applied);
    let check_time = checking.elapsed();

    eprintln!(
        "chaos: {kills} kills (per node {kills_per_node:?}); election {}; rejoin {}",
        summary(&elections),
        summary(&rejoins)
    );
    eprintln!(
        "chaos: {total_ops} operations in {:.1} s of load ({} acknowledged submits, {} stored, {unknown} with unknown outcome, {} requests refused and resent)",
        load_time.as_secs_f64(),
        unique.len(),
        listings[0].len(),
        shared.refused.load(SeqCst)
    );
    eprintln!(
        "chaos: checked {} windows (largest {} ops, slowest {} ms; {} applied ops left in flight, {} unapplied dropped) in {} ms",
        checked.windows,
        checked.largest,
        checked.slowest.as_millis(),
        checked.in_flight,
        checked.dropped,
        check_time.as_millis(),
    );
    eprintln!(
        "chaos: {} point queries on 3 nodes in {} ms; {} admin reads retried after a 5xx; whole test {:.1} s",
        unique.len() * NODES,
        query_time.as_millis(),
        cluster.retries.load(SeqCst),
        began.elapsed().as_secs_f64()
    );
    for (why, (count, slowest)) in shared.unknown.lock().unwrap().iter() {
        eprintln!(
            "chaos: unknown outcome x{count} (slowest answer {} ms): {why}",
            slowest.as_millis()
        );
    }
}
