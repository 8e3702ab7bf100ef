//! Kubernetes' `$(VAR)` references in a task's command and args, expanded
//! from the task's environment the way kubelet expands a container's
//! command and args before starting it (k8s.io/kubernetes,
//! `third_party/forked/golang/expansion`). On Kubernetes kubelet does this
//! itself; the local executor does it here so a spec runs the same on both
//! (OSMO's own test workflows pass a script path as `args: ['$(FILE_PATH)']`).
//!
//! The rules, as kubelet applies them:
//! - `$(NAME)` becomes the value of `NAME`; a name the environment does not
//!   define is left as written, `$(NAME)` included;
//! - `$$` is an escaped `$`: `$$(NAME)` becomes the literal `$(NAME)`;
//! - a `$` followed by anything else, or ending the text, stays as it is
//!   (`$HOME`, `${HOME}`, `$?` are the shell's, not kubelet's);
//! - `$(` without a closing `)` stays as written;
//! - no nesting: the name runs to the first `)`, and a value is never
//!   expanded again.
//!
//! Invariant: total over any text; nothing here panics.

use std::collections::BTreeMap;

/// `text` with its `$(NAME)` references expanded from `environment`.
pub fn expand(text: &str, environment: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A `$` that ends the text stays.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(close) => {
                    let name = &after[1..1 + close];
                    match environment.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 2..];
                }
                // Unterminated: `$(` is kept and scanning goes on after it.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = chars.as_str();
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> BTreeMap<String, String> {
        [
            ("ALPHA", "a"),
            ("BETA", "b"),
            ("GAMMA", "c"),
            ("POINTER", "$(ALPHA)"),
            ("BLANK", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// kubelet's documented cases (the expansion package's table), with
    /// this module's own names and values.
    #[test]
    fn kubelets_cases() {
        let env = environment();
        let cases = [
            // references anywhere, repeated, several
            ("$(ALPHA)", "a"),
            ("$(ALPHA)-$(ALPHA)", "a-a"),
            ("$(ALPHA)-1", "a-1"),
            ("___$(BETA)___", "___b___"),
            ("___$(GAMMA)", "___c"),
            ("$(ALPHA)_$(BETA)_$(GAMMA)", "a_b_c"),
            // `$$` escapes
            ("$$(BETA)_$(ALPHA)", "$(BETA)_a"),
            ("$$(ALPHA)_$$(BETA)", "$(ALPHA)_$(BETA)"),
            ("f000-$$ALPHA", "f000-$ALPHA"),
            // backslashes are not escapes
            ("foo\\$(GAMMA)bar", "foo\\cbar"),
            ("foo\\\\$(GAMMA)bar", "foo\\\\cbar"),
            ("foo\\\\\\\\$(ALPHA)bar", "foo\\\\\\\\abar"),
            // no nesting, no second expansion
            ("$(ALPHA$(BETA))", "$(ALPHA$(BETA))"),
            ("$(ALPHA$(BETA)", "$(ALPHA$(BETA)"),
            ("$(POINTER)", "$(ALPHA)"),
            ("%%$(POINTER)--$(POINTER)%%", "%%$(ALPHA)--$(ALPHA)%%"),
            // empty values, unterminated and operator-less references
            ("foo$(BLANK)bar", "foobar"),
            ("foo$(ALPHAwhoops!", "foo$(ALPHAwhoops!"),
            ("f00__(ALPHA)__", "f00__(ALPHA)__"),
            // the shell's syntax passes through
            ("$?_boo_$!", "$?_boo_$!"),
            ("$ALPHA", "$ALPHA"),
            ("${ALPHA}", "${ALPHA}"),
            ("$ALPHA)", "$ALPHA)"),
            // undefined names stay as written
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            // runs of `$`
            ("$$$$$$(UNDEFINED)", "$$$(UNDEFINED)"),
            ("$$$$$$(ALPHA)", "$$$(ALPHA)"),
            ("$$$$$$$(UNDEFINED)", "$$$$(UNDEFINED)"),
            ("$$$$$$$(ALPHA)", "$$$a"),
            // incomplete references at the end, a `$` at the end
            ("$(BETA)_______$(A", "b_______$(A"),
            ("$(GAMMA)_______$(", "c_______$("),
            ("$(ALPHA)foobarzab$", "afoobarzab$"),
            ("foo-\\$(ALPHA", "foo-\\$(ALPHA"),
            ("--$($($($($--", "--$($($($($--"),
            ("$($($($($--foo$(", "$($($($($--foo$("),
            ("foo0--$($($($(", "foo0--$($($($("),
            // `$$` inside a name is part of the name
            ("$(foo$$var)", "$(foo$$var)"),
            ("\n", "\n"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, &env), expected, "{input:?}");
        }
    }

    #[test]
    fn any_name_and_any_text() {
        let env: BTreeMap<String, String> =
            [("find {{input:0}} -name x", "not a shell"), ("ü", "umlaut")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        // What kubelet looks up is whatever sits between the parentheses.
        assert_eq!(expand("$(find {{input:0}} -name x)", &env), "not a shell");
        assert_eq!(expand("$(ü)$ü$", &env), "umlaut$ü$");
        // Shell command substitution stays when no variable has its text.
        assert_eq!(
            expand("echo \"Hello from $(hostname)\"", &env),
            "echo \"Hello from $(hostname)\""
        );
    }
}
