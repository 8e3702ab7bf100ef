//! The layering check: the binary's modules form layers without cycles and
//! without upward imports, and the crates point one way.
//!
//! `LAYERS` below is the one statement of the order (ARCHITECTURE.md draws
//! it). Every top-level module of `src/` sits in exactly one row; a module
//! may use modules of rows below its own, never its own row or one above.
//! Inside every module, the files form a graph without cycles (a module may
//! always use its own submodules; that edge is structure, not a dependency).
//!
//! Paths are read with `syn` from every file reachable from `src/lib.rs`:
//! `use` trees, paths in code and types, and `crate::`/`super::` paths
//! inside macro invocations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Top to bottom. A row's modules are independent of each other.
const LAYERS: &[(&str, &[&str])] = &[
    // Edges: what a user starts, assembling the layers below.
    ("edges", &["dev"]),
    ("edges", &["server", "cli"]),
    // The HTTP API over the control plane's roles.
    ("api", &["api"]),
    // The roles: the control plane's (worker, timers, logger, operator hub,
    // membership) and the compute side's (operator, executors, in-pod runtime).
    ("roles", &["control", "operator"]),
    // What both sides of the operator stream and the API share.
    ("shared", &["log_chunk"]),
    ("shared", &["protocol"]),
    ("shared", &["data"]),
    // Leaves: each stands alone.
    (
        "base",
        &[
            "spec",
            "tls",
            "object_storage",
            "metrics",
            "supervisor",
            "clock",
            "access_token",
            "data_dir",
            "secrets",
            "bulk",
            "image_ref",
            "text",
        ],
    ),
];

/// Crates each workspace crate must not depend on: storage is the pure core
/// (no async runtime, no network, no Raft), raft knows nothing of HTTP APIs,
/// workflows' YAML or Kubernetes.
const CRATE_FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "storage/Cargo.toml",
        &[
            "tokio",
            "openraft",
            "hyper",
            "axum",
            "reqwest",
            "kube",
            "rustls",
            "gantry-raft",
            "gantry",
        ],
    ),
    (
        "raft/Cargo.toml",
        &["gantry", "kube", "reqwest", "serde_yaml_ng", "minijinja"],
    ),
];

type ModulePath = Vec<String>;

struct SourceFile {
    module: ModulePath,
    syntax: syn::File,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file module reachable from `src/lib.rs`, with its module path.
fn load_modules() -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut queue = vec![(Vec::<String>::new(), root().join("src/lib.rs"))];
    while let Some((module, path)) = queue.pop() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        let syntax = syn::parse_file(&text)
            .unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()));
        // Children of `a.rs` live in `a/`, of `a/mod.rs` and `lib.rs` beside it.
        let is_dir_owner = matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        );
        let dir = if is_dir_owner {
            path.parent().expect("a file has a parent").to_path_buf()
        } else {
            path.with_extension("")
        };
        collect_file_children(&syntax.items, &module, &dir, &mut queue);
        files.push(SourceFile { module, syntax });
    }
    files
}

/// `mod x;` declarations, also inside inline modules (`mod a { mod b; }`).
fn collect_file_children(
    items: &[syn::Item],
    module: &ModulePath,
    dir: &Path,
    queue: &mut Vec<(ModulePath, PathBuf)>,
) {
    for item in items {
        let syn::Item::Mod(item_mod) = item else {
            continue;
        };
        let name = item_mod.ident.to_string();
        let mut child = module.clone();
        child.push(name.clone());
        match &item_mod.content {
            Some((_, inner)) => collect_file_children(inner, &child, &dir.join(&name), queue),
            None => {
                let explicit = item_mod.attrs.iter().find_map(|attr| {
                    let syn::Meta::NameValue(pair) = &attr.meta else {
                        return None;
                    };
                    if !pair.path.is_ident("path") {
                        return None;
                    }
                    match &pair.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(text),
                            ..
                        }) => Some(dir.join(text.value())),
                        _ => None,
                    }
                });
                let file = explicit.unwrap_or_else(|| {
                    let flat = dir.join(format!("{name}.rs"));
                    if flat.exists() {
                        flat
                    } else {
                        dir.join(&name).join("mod.rs")
                    }
                });
                queue.push((child, file));
            }
        }
    }
}

/// Collects the absolute module paths one file refers to.
struct PathCollector<'a> {
    /// The module the visitor is in (inline modules push onto it).
    current: ModulePath,
    known: &'a BTreeSet<ModulePath>,
    found: BTreeSet<ModulePath>,
}

impl PathCollector<'_> {
    /// Records `segments` (as written, relative or absolute) if it names a
    /// module of this crate.
    fn record(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut absolute: ModulePath = match first.as_str() {
            "crate" => segments[1..].to_vec(),
            "self" => {
                let mut path = self.current.clone();
                path.extend_from_slice(&segments[1..]);
                path
            }
            "super" => {
                let mut path = self.current.clone();
                let mut rest = segments;
                while rest.first().map(String::as_str) == Some("super") {
                    path.pop();
                    rest = &rest[1..];
                }
                path.extend_from_slice(rest);
                path
            }
            _ => {
                // Relative: only a child module of the current one counts.
                let mut child = self.current.clone();
                child.push(first.clone());
                if !self.known.contains(&child) {
                    return;
                }
                let mut path = self.current.clone();
                path.extend_from_slice(segments);
                path
            }
        };
        // The longest prefix that is a module of this crate.
        while !absolute.is_empty() && !self.known.contains(&absolute) {
            absolute.pop();
        }
        self.found.insert(absolute);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                let segments = prefix.clone();
                self.record(&segments);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                let segments = prefix.clone();
                self.record(&segments);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                let segments = prefix.clone();
                self.record(&segments);
            }
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }

    /// `crate::a::b` and `super::a` sequences in a macro's tokens.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        let mut index = 0;
        while index < tokens.len() {
            match &tokens[index] {
                proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                proc_macro2::TokenTree::Ident(ident) if ident == "crate" || ident == "super" => {
                    let mut segments = vec![ident.to_string()];
                    let mut next = index + 1;
                    while let (
                        Some(proc_macro2::TokenTree::Punct(first)),
                        Some(proc_macro2::TokenTree::Punct(second)),
                        Some(proc_macro2::TokenTree::Ident(name)),
                    ) = (tokens.get(next), tokens.get(next + 1), tokens.get(next + 2))
                    {
                        if first.as_char() != ':' || second.as_char() != ':' {
                            break;
                        }
                        segments.push(name.to_string());
                        next += 3;
                    }
                    if segments.len() > 1 {
                        self.record(&segments);
                    }
                    index = next;
                    continue;
                }
                _ => {}
            }
            index += 1;
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.current.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.current.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// Edges between file modules, without self-edges and without a module's
/// edges to its own descendants.
fn module_graph(files: &[SourceFile]) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let mut known: BTreeSet<ModulePath> = files.iter().map(|f| f.module.clone()).collect();
    // Inline modules (`mod tests { }`) resolve to paths too.
    for file in files {
        let mut inline = Vec::new();
        collect_inline(&file.syntax.items, &file.module, &mut inline);
        known.extend(inline);
    }
    let file_modules: BTreeSet<ModulePath> = files.iter().map(|f| f.module.clone()).collect();
    let owner = |module: &ModulePath| -> ModulePath {
        let mut module = module.clone();
        while !file_modules.contains(&module) {
            module.pop();
        }
        module
    };
    let mut graph = BTreeMap::new();
    for file in files {
        let mut collector = PathCollector {
            current: file.module.clone(),
            known: &known,
            found: BTreeSet::new(),
        };
        collector.visit_file(&file.syntax);
        let targets: BTreeSet<ModulePath> = collector
            .found
            .iter()
            .map(&owner)
            .filter(|target| !target.starts_with(&file.module))
            .collect();
        graph.insert(file.module.clone(), targets);
    }
    graph
}

fn collect_inline(items: &[syn::Item], module: &ModulePath, out: &mut Vec<ModulePath>) {
    for item in items {
        if let syn::Item::Mod(item_mod) = item {
            if let Some((_, inner)) = &item_mod.content {
                let mut child = module.clone();
                child.push(item_mod.ident.to_string());
                out.push(child.clone());
                collect_inline(inner, &child, out);
            }
        }
    }
}

fn row_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, row)| row.contains(&top))
}

#[test]
fn every_top_level_module_has_one_place_in_the_layers() {
    let files = load_modules();
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect();
    let listed: Vec<&str> = LAYERS
        .iter()
        .flat_map(|(_, row)| row.iter().copied())
        .collect();
    let mut problems = Vec::new();
    for top in &tops {
        match listed.iter().filter(|name| *name == top).count() {
            0 => problems.push(format!("module `{top}` is in no row of LAYERS")),
            1 => {}
            _ => problems.push(format!("module `{top}` is in several rows of LAYERS")),
        }
    }
    for name in &listed {
        if !tops.contains(*name) {
            problems.push(format!(
                "LAYERS names `{name}`, which src/lib.rs does not declare"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_module_imports_its_own_row_or_a_row_above() {
    let files = load_modules();
    let graph = module_graph(&files);
    let mut problems = Vec::new();
    for (from, targets) in &graph {
        let Some(from_top) = from.first() else {
            continue;
        };
        for target in targets {
            let Some(target_top) = target.first() else {
                continue;
            };
            if target_top == from_top {
                continue;
            }
            match (row_of(from_top), row_of(target_top)) {
                (Some(from_row), Some(target_row)) if target_row > from_row => {}
                (Some(from_row), Some(target_row)) => problems.push(format!(
                    "{} ({} layer) uses {} ({} layer): {}",
                    show(from),
                    LAYERS[from_row].0,
                    show(target),
                    LAYERS[target_row].0,
                    if target_row == from_row {
                        "modules of one row are independent"
                    } else {
                        "an upward import"
                    }
                )),
                _ => {} // reported by the placement test
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Tarjan's strongly connected components; a component of two or more
/// modules is a cycle.
fn cycles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct State<'g> {
        graph: &'g BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'g ModulePath, usize>,
        low: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        on_stack: BTreeSet<&'g ModulePath>,
        next: usize,
        found: Vec<Vec<ModulePath>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g ModulePath) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let Some((target, _)) = state.graph.get_key_value(target) else {
                    continue;
                };
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.low[node].min(state.low[target]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.low[node].min(state.index[target]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn modules_import_each_other_without_cycles() {
    let files = load_modules();
    let graph = module_graph(&files);
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&ModulePath> = component.iter().collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", show(from), show(to)))
                })
                .collect();
            format!("cycle: {}", edges.join(", "))
        })
        .collect();
    assert!(described.is_empty(), "{}", described.join("\n"));
}

#[test]
fn the_check_sees_imports_in_uses_paths_and_macros() {
    // A probe: the collector must find every form, or the checks above
    // could pass by not looking.
    let known: BTreeSet<ModulePath> = [vec![], vec!["a".into()], vec!["a".into(), "b".into()]]
        .into_iter()
        .chain([vec!["c".into()], vec!["c".into(), "d".into()]])
        .collect();
    let source = r#"
        use crate::a::{b::Thing, Other};
        fn f() { let _ = super::d::g(); tracing::info!(x = %crate::c::h()); }
        type T = crate::a::b::U;
    "#;
    let syntax = syn::parse_file(source).expect("probe parses");
    let mut collector = PathCollector {
        current: vec!["c".into(), "e".into()],
        known: &known,
        found: BTreeSet::new(),
    };
    collector.visit_file(&syntax);
    let found: Vec<String> = collector.found.iter().map(|m| show(m)).collect();
    assert_eq!(found, ["a", "a::b", "c", "c::d"]);
    // And a cycle among three modules is reported.
    let m = |name: &str| vec![name.to_string()];
    let graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = [
        (m("x"), [m("y")].into()),
        (m("y"), [m("z")].into()),
        (m("z"), [m("x")].into()),
        (m("w"), [m("x")].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), vec![vec![m("x"), m("y"), m("z")]]);
}

#[test]
fn crates_point_one_way() {
    let mut problems = Vec::new();
    for (manifest, forbidden) in CRATE_FORBIDDEN {
        let text = std::fs::read_to_string(root().join(manifest))
            .unwrap_or_else(|error| panic!("reading {manifest}: {error}"));
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_string();
                continue;
            }
            // Dev-dependencies may reach up (tests drive the real stack).
            if section != "dependencies" {
                continue;
            }
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            let name = name.trim().trim_end_matches(".workspace");
            if forbidden.contains(&name) {
                problems.push(format!("{manifest} depends on {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
