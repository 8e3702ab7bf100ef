//! The shape of a route: its method, path, handler, access rule and what
//! the API document says of it. The table itself is `route_table`.
//!
//! Invariant: a route cannot be built without its access rule
//! ([`Route::new`] takes it), so no route escapes authorization.

use super::access::Access;
use super::AppState;
use axum::http::Method;
use axum::routing::MethodRouter;

/// What a request or response body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// JSON (`application/json`).
    Json,
    /// Text (`text/plain`): rendered logs and events, specs.
    Text,
    /// A stream of bincode frames (`application/octet-stream`).
    Frames,
    /// A snapshot archive (`application/zstd`).
    Archive,
}

impl Content {
    pub fn media_type(self) -> &'static str {
        match self {
            Content::Json => "application/json",
            Content::Text => "text/plain",
            Content::Frames => "application/octet-stream",
            Content::Archive => "application/zstd",
        }
    }
}

/// The type of a query parameter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Boolean,
    /// Repeated keys or comma-separated values.
    List,
}

/// One query parameter a handler reads.
#[derive(Clone, Copy, Debug)]
pub struct QueryParam {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Gantry's own addition (OSMO has no such parameter).
    pub gantry_only: bool,
}

pub const fn optional(name: &'static str, kind: Kind) -> QueryParam {
    QueryParam {
        name,
        kind,
        required: false,
        gantry_only: false,
    }
}

pub const fn required(name: &'static str, kind: Kind) -> QueryParam {
    QueryParam {
        name,
        kind,
        required: true,
        gantry_only: false,
    }
}

pub const fn gantry(name: &'static str, kind: Kind) -> QueryParam {
    QueryParam {
        name,
        kind,
        required: false,
        gantry_only: true,
    }
}

/// One route.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub query: Vec<QueryParam>,
    pub body: Option<Content>,
    pub response: Content,
    pub handler: MethodRouter<AppState>,
    /// A session into a task: a follower relays it to the leader
    /// (`session_relay`).
    pub relayed: bool,
}

impl Route {
    pub fn new(
        method: Method,
        path: &'static str,
        summary: &'static str,
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> Route {
        Route {
            method,
            path,
            summary,
            access,
            query: Vec::new(),
            body: None,
            response: Content::Json,
            handler,
            relayed: false,
        }
    }

    /// Served by the leader only: a follower relays it there.
    pub fn relayed(mut self) -> Route {
        self.relayed = true;
        self
    }

    pub fn query(mut self, query: &[QueryParam]) -> Route {
        self.query = query.to_vec();
        self
    }

    pub fn body(mut self, body: Content) -> Route {
        self.body = Some(body);
        self
    }

    pub fn response(mut self, response: Content) -> Route {
        self.response = response;
        self
    }

    /// The part of the path that groups routes in the document
    /// (`/api/configs/pool` → `configs`).
    pub fn tag(&self) -> &'static str {
        let mut segments = self.path.trim_start_matches('/').split('/');
        match segments.next() {
            Some("api") => segments.next().unwrap_or("api"),
            Some(first) => first,
            None => "api",
        }
    }
}
