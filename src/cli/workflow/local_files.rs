//! `files[].localpath`: a file on the submitting machine, read into the
//! entry's `contents` before `workflow submit|validate` sends the spec, as
//! OSMO's CLI does (the server cannot read the client's disk and refuses a
//! `localpath` it receives).
//!
//! How, as OSMO's CLI: the spec is rendered (here, in-process with the same
//! code and default limits as the server), read as YAML, every task's
//! `localpath` entry gets `contents` (the file's text; a relative path is
//! relative to the spec file's directory) in place of `localpath`, and the
//! result is sent as YAML, with the spec as written as its template.
//!
//! Invariants: a spec with no `localpath` entry is sent byte for byte as
//! written (this module returns `None`); a missing or unreadable file, or an
//! entry that also gives `contents`, is refused before anything is sent,
//! naming the task, the file entry and the path; the text sent renders to
//! itself on the server (see `spec::literal`), so file contents are not
//! rendered a second time.

use crate::spec::{literal, read_document, SpecInput, SpecLimits};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

const KEY: &str = "localpath";

/// The spec to send in place of the one written.
#[derive(Debug)]
pub struct Inlined {
    /// The rendered spec with every `localpath` read into `contents`.
    pub text: String,
    /// The spec's warnings (e.g. repeated keys): the text sent no longer
    /// has them, so the server cannot report them.
    pub warnings: Vec<String>,
}

/// `None` when the spec (at `spec_path`, text `text`) has no `localpath`
/// entry; else the spec to send, local files read.
pub fn inline(
    spec_path: &Path,
    text: &str,
    set: &[String],
    set_string: &[String],
) -> anyhow::Result<Option<Inlined>> {
    if !text.contains(KEY) {
        return Ok(None);
    }
    let input = SpecInput {
        text: text.to_string(),
        set_variables: set.to_vec(),
        set_string_variables: set_string.to_vec(),
        set_env: Vec::new(),
    };
    let document = read_document(&input, &SpecLimits::default())
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let mut root = document.root;
    let base = spec_path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut read = 0usize;
    for (at, task) in tasks_of(&mut root) {
        read += inline_task(&at, task, &base)?;
    }
    if read == 0 {
        return Ok(None);
    }
    let yaml = serde_yaml_ng::to_string(&root)
        .map_err(|error| anyhow::anyhow!("cannot write the spec with its local files: {error}"))?;
    Ok(Some(Inlined {
        text: literal(&yaml),
        warnings: document.warnings,
    }))
}

/// Every task mapping of the spec with its field path, flat or in groups.
fn tasks_of(root: &mut Value) -> Vec<(String, &mut Mapping)> {
    let mut out = Vec::new();
    let Some(workflow) = root.get_mut("workflow").and_then(Value::as_mapping_mut) else {
        return out;
    };
    for (key, value) in workflow.iter_mut() {
        match (key.as_str(), value) {
            (Some("tasks"), Value::Sequence(tasks)) => {
                for (index, task) in tasks.iter_mut().enumerate() {
                    if let Value::Mapping(task) = task {
                        out.push((format!("workflow.tasks[{index}]"), task));
                    }
                }
            }
            (Some("groups"), Value::Sequence(groups)) => {
                for (g, group) in groups.iter_mut().enumerate() {
                    let Some(Value::Sequence(tasks)) = group.get_mut("tasks") else {
                        continue;
                    };
                    for (t, task) in tasks.iter_mut().enumerate() {
                        if let Value::Mapping(task) = task {
                            out.push((format!("workflow.groups[{g}].tasks[{t}]"), task));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads the task's `localpath` entries into `contents`; how many it read.
fn inline_task(at: &str, task: &mut Mapping, base: &Path) -> anyhow::Result<usize> {
    let name = match task.get("name") {
        Some(Value::String(name)) => format!("task '{name}'"),
        _ => format!("the task at {at}"),
    };
    let Some(Value::Sequence(files)) = task.get_mut("files") else {
        return Ok(0);
    };
    let mut read = 0;
    for (index, entry) in files.iter_mut().enumerate() {
        let Value::Mapping(entry) = entry else {
            continue;
        };
        let Some(local) = entry.get(KEY) else {
            continue;
        };
        let here = format!("{name}, {at}.files[{index}]");
        let Value::String(local) = local else {
            anyhow::bail!("{here}: localpath must be a path (a string)");
        };
        if entry.contains_key("contents") {
            anyhow::bail!("{here}: give either contents or localpath, not both");
        }
        let path = resolve(base, local);
        let contents = std::fs::read(&path)
            .map_err(|error| anyhow::anyhow!("{here}: cannot read localpath {local:?} ({}): {error}", path.display()))
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    anyhow::anyhow!(
                        "{here}: localpath {local:?} ({}) is not UTF-8 text; give binary files as base64 contents",
                        path.display()
                    )
                })
            })?;
        // `contents` takes the place of `localpath`.
        let taken = std::mem::take(entry);
        *entry = taken
            .into_iter()
            .map(|(key, value)| {
                if key.as_str() == Some(KEY) {
                    (Value::from("contents"), Value::String(contents.clone()))
                } else {
                    (key, value)
                }
            })
            .collect();
        read += 1;
    }
    Ok(read)
}

/// A relative `localpath` is relative to the spec file's directory.
fn resolve(base: &Path, local: &str) -> PathBuf {
    let local = Path::new(local);
    if local.is_absolute() {
        local.to_path_buf()
    } else {
        base.join(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn prepared(text: &str) -> crate::spec::Prepared {
        crate::spec::prepare(
            &SpecInput {
                text: text.to_string(),
                ..SpecInput::default()
            },
            &SpecLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn specs_without_localpath_are_sent_as_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let text = "workflow:\n  name: x  # localpath in a comment\n  tasks: []\n";
        let spec = write(dir.path(), "spec.yaml", text);
        assert!(inline(&spec, text, &[], &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        let plain = "workflow: {name: x}\n";
        assert!(inline(&spec, plain, &[], &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    #[test]
    fn local_files_are_read_relative_to_the_spec_in_tasks_and_groups() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), "specs/train.py", "print('{{output}}')\n");
        write(
            dir.path(),
            "specs/lib/util.sh",
            "echo ${#ARGS[@]} {% raw %}\n",
        );
        let text = "\
workflow:
  name: '{{ name }}'
  groups:
  - name: g
    tasks:
    - name: train
      image: python
      command: [python, /tmp/train.py]
      files:
      - path: /tmp/train.py
        localpath: train.py
      - {path: /tmp/util.sh, localpath: lib/util.sh}
      - path: /tmp/inline
        contents: as written
default-values: {name: wf}
";
        let spec = write(dir.path(), "specs/spec.yaml", text);
        let inlined = inline(&spec, text, &[], &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("inlined");
        // What the server makes of it: rendered to itself, files in place.
        let prepared = prepared(&inlined.text);
        assert_eq!(prepared.name, "wf");
        let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
        let files = &plan.groups[0].tasks[0].files;
        let got: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/tmp/train.py", "print('{{output}}')\n"),
                ("/tmp/util.sh", "echo ${#ARGS[@]} {% raw %}\n"),
                ("/tmp/inline", "as written"),
            ]
        );
        assert!(inlined.warnings.is_empty());
    }

    #[test]
    fn contents_with_jinja_syntax_are_not_rendered_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(
            dir.path(),
            "count.sh",
            "echo ${#ITEMS[@]} {{ not_a_variable }}\n",
        );
        let text = "workflow:\n  name: wf\n  tasks:\n  - name: t\n    image: i\n    command: [sh, /tmp/c]\n    files:\n    - {path: /tmp/c, localpath: count.sh}\n";
        let spec = write(dir.path(), "spec.yaml", text);
        let inlined = inline(&spec, text, &[], &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("inlined");
        let plan = prepared(&inlined.text)
            .plan
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            plan.groups[0].tasks[0].files[0].contents,
            "echo ${#ITEMS[@]} {{ not_a_variable }}\n"
        );
    }

    #[test]
    fn missing_files_and_bad_entries_name_task_entry_and_path() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spec = dir.path().join("spec.yaml");
        let task = |files: &str| {
            format!("workflow:\n  name: wf\n  tasks:\n  - name: train\n    image: i\n    command: [x]\n    files:\n{files}")
        };
        let missing =
            task("    - {path: /tmp/a, contents: x}\n    - {path: /tmp/b, localpath: nope.py}\n");
        let error = inline(&spec, &missing, &[], &[])
            .err()
            .map(|e| e.to_string());
        let expected = format!(
            "task 'train', workflow.tasks[0].files[1]: cannot read localpath \"nope.py\" ({}): No such file or directory (os error 2)",
            dir.path().join("nope.py").display()
        );
        assert_eq!(error.as_deref(), Some(expected.as_str()));

        let both = task("    - {path: /tmp/b, localpath: a.py, contents: x}\n");
        let error = inline(&spec, &both, &[], &[]).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("task 'train', workflow.tasks[0].files[0]: give either contents or localpath, not both")
        );

        write(dir.path(), "blob.bin", "");
        std::fs::write(dir.path().join("blob.bin"), [0xff, 0xfe]).unwrap_or_else(|e| panic!("{e}"));
        let binary = task("    - {path: /tmp/b, localpath: blob.bin}\n");
        let error = inline(&spec, &binary, &[], &[])
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(
                |e| e.contains("workflow.tasks[0].files[0]") && e.contains("not UTF-8")
            ),
            "{error:?}"
        );

        let bad_template = "workflow: {name: '{{ nope }}'}\n# localpath\n";
        let error = inline(&spec, bad_template, &[], &[])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("template error: undefined variable 'nope' (line 1)")
        );
    }

    #[test]
    fn set_variables_render_the_spec_and_repeated_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), "a.txt", "A");
        let text = "workflow:\n  name: '{{ n }}'\n  tasks:\n  - name: t\n    image: i\n    image: j\n    command: [x]\n    files: [{path: /a, localpath: a.txt}]\n";
        let spec = write(dir.path(), "spec.yaml", text);
        let inlined = inline(&spec, text, &["n=from-set".into()], &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("inlined");
        let prepared = prepared(&inlined.text);
        assert_eq!(prepared.name, "from-set");
        assert_eq!(
            prepared
                .plan
                .map(|p| p.groups[0].tasks[0].image.clone())
                .ok()
                .as_deref(),
            Some("j")
        );
        assert_eq!(
            inlined.warnings,
            vec!["duplicate key 'image' in workflow.tasks[0] at line 6: the last value is used"]
        );
    }
}
