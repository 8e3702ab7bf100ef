//! The minijinja render proper, under hard limits: the one set of
//! semantics used in-process and by the isolated worker alike.
//!
//! Invariants: rendering is bounded by fuel (instructions), recursion depth
//! and output size, so a template bomb fails fast with a `Template` error;
//! undefined variables and attributes are errors (strict undefined), which
//! also rejects Python-style escapes such as `''.__class__`; an error names
//! its line in the user's file and, for an undefined value, the variable
//! (`template error: undefined variable 'foo' (line 3)`).

use super::defaults::LineMap;
use super::error::SpecError;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::io;

/// The minijinja limits of one render; travels to the isolated worker as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderLimits {
    /// Jinja instructions one render may execute.
    pub fuel: u64,
    /// Bytes of rendered text.
    pub output_bytes: usize,
    pub recursion: usize,
}

/// Whether `text` holds anything minijinja would interpret. With the
/// default syntax (no line statements) only these three openers start a
/// tag; any other text, stray `}}` included, is emitted verbatim.
pub fn has_jinja(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

pub fn check_output_size(len: usize, cap: usize) -> Result<(), SpecError> {
    if len > cap {
        return Err(SpecError::template(format!(
            "rendered spec exceeds {cap} bytes"
        )));
    }
    Ok(())
}

/// The minijinja render proper, of a body whose tokens are already
/// protected; used in-process and by the isolated worker alike, so both
/// paths share one set of semantics and limits.
pub fn render_protected(
    protected: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: RenderLimits,
    lines: LineMap,
) -> Result<String, SpecError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_keep_trailing_newline(true);
    // Errors keep the failing expression's span, to name what is undefined.
    env.set_debug(true);
    let template = env
        .template_from_str(protected)
        .map_err(|err| template_error(&err, &env, None, vars, lines))?;

    let mut out = CappedWriter {
        buf: Vec::new(),
        cap: limits.output_bytes,
        overflowed: false,
    };
    let result = template.render_captured_to(vars, &mut out);
    if out.overflowed {
        return Err(SpecError::template(format!(
            "rendered spec exceeds {} bytes",
            limits.output_bytes
        )));
    }
    result.map_err(|err| template_error(&err, &env, Some(&template), vars, lines))?;
    String::from_utf8(out.buf).map_err(|_| SpecError::template("rendered spec is not valid UTF-8"))
}

/// minijinja's error in the user's terms: what failed (an undefined
/// variable by name) and the line in the user's file.
fn template_error(
    err: &minijinja::Error,
    env: &Environment,
    template: Option<&minijinja::Template>,
    vars: &serde_yaml_ng::Mapping,
    lines: LineMap,
) -> SpecError {
    let undefined = || undefined_name(err, env, template, vars);
    let what = match err.kind() {
        ErrorKind::UndefinedError => match undefined() {
            Some(Undefined::Variable(name)) => format!("undefined variable '{name}'"),
            Some(Undefined::Expression(text)) => format!("undefined value '{text}'"),
            None => err.kind().to_string(),
        },
        kind => {
            let mut what = match err.detail() {
                Some(detail) => format!("{kind}: {detail}"),
                None => kind.to_string(),
            };
            // e.g. "cannot convert undefined to isize" from `range(n)`.
            if err
                .detail()
                .is_some_and(|detail| detail.contains("undefined"))
            {
                if let Some(Undefined::Variable(name)) = undefined() {
                    what.push_str(&format!(" (undefined variable '{name}')"));
                }
            }
            what
        }
    };
    let at = match err.line() {
        Some(line) => format!(" (line {})", lines.input_line(line)),
        None => String::new(),
    };
    SpecError::template(format!("template error: {what}{at}"))
}

enum Undefined {
    /// A name the template reads and no variable defines.
    Variable(String),
    /// Some other expression that came out undefined (`a.b`, `a[0]`).
    Expression(String),
}

/// What came out undefined. minijinja reports only "undefined value" and
/// the failing expression's span: the first name in that span (else in
/// the Jinja of its line, for a value that went undefined earlier, as with
/// `{% set y = foo %}{{ y }}` or a filter's argument) that the template
/// reads without declaring it and that neither the variables nor the
/// globals define; else the span itself.
fn undefined_name(
    err: &minijinja::Error,
    env: &Environment,
    template: Option<&minijinja::Template>,
    vars: &serde_yaml_ng::Mapping,
) -> Option<Undefined> {
    let source = err.template_source()?;
    let span = err
        .range()
        .and_then(|range| source.get(range))
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let undeclared = template
        .map(|template| template.undeclared_variables(false))
        .unwrap_or_default();
    let unknown = |name: &&str| {
        undeclared.contains(*name)
            && !vars.contains_key(*name)
            && env.globals().all(|(global, _)| global != *name)
    };
    if let Some(name) = span.and_then(|text| identifiers(text).find(unknown)) {
        return Some(Undefined::Variable(name.to_string()));
    }
    let line = err
        .line()
        .and_then(|line| source.lines().nth(line.saturating_sub(1)));
    if let Some(name) = line.and_then(|line| jinja_parts(line).flat_map(identifiers).find(unknown))
    {
        return Some(Undefined::Variable(name.to_string()));
    }
    span.map(|text| Undefined::Expression(text.chars().take(80).collect()))
}

/// The insides of the `{{ ... }}` and `{% ... %}` tags of one line.
fn jinja_parts(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        let open = ["{{", "{%"]
            .iter()
            .filter_map(|opener| rest.find(opener))
            .min()?;
        let inside = &rest[open + 2..];
        let close = ["}}", "%}"]
            .iter()
            .filter_map(|closer| inside.find(closer))
            .min()
            .unwrap_or(inside.len());
        rest = &inside[close..];
        Some(&inside[..close])
    })
}

/// The identifiers of an expression that may be variable references: not
/// attributes (`.name`), keyword arguments, string literals, numbers,
/// filter or test names (keywords stay; no variable is named like them).
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut index = 0;
    let mut quote: Option<u8> = None;
    let mut previous: Option<u8> = None;
    while index < bytes.len() {
        let byte = bytes[index];
        if let Some(open) = quote {
            if byte == b'\\' {
                index += 2;
                continue;
            }
            if byte == open {
                quote = None;
            }
            previous = Some(byte);
            index += 1;
            continue;
        }
        if byte == b'"' || byte == b'\'' {
            quote = Some(byte);
            previous = Some(byte);
            index += 1;
            continue;
        }
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            let start = index;
            while index < bytes.len()
                && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_')
            {
                index += 1;
            }
            let after = text[index..].trim_start();
            let number = byte.is_ascii_digit();
            let attribute_or_filter = matches!(previous, Some(b'.' | b'|'));
            let test = text[..start].trim_end().ends_with(" is")
                || text[..start].trim_end().ends_with(" is not");
            let keyword_argument = after.starts_with('=') && !after.starts_with("==");
            if !(number || attribute_or_filter || test || keyword_argument) {
                found.push(&text[start..index]);
            }
            previous = Some(bytes[index - 1]);
            continue;
        }
        if !byte.is_ascii_whitespace() {
            previous = Some(byte);
        }
        index += 1;
    }
    found.into_iter()
}

/// Collects output and fails once it would exceed `cap`, which makes
/// minijinja abort the render.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.overflowed = true;
            return Err(io::Error::other("rendered output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(template: &str, vars: &str, lines: LineMap) -> String {
        let vars: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(vars).unwrap_or_default();
        let limits = RenderLimits {
            fuel: 100_000,
            output_bytes: 1 << 20,
            recursion: 50,
        };
        match render_protected(template, &vars, limits, lines) {
            Ok(text) => format!("rendered {text:?}"),
            Err(err) => err.message,
        }
    }

    #[test]
    fn undefined_values_are_named_with_their_line() {
        let none = LineMap::default();
        let cases = [
            ("a\nb\n{{ foo }}\n", "undefined variable 'foo' (line 3)"),
            ("{{ foo.bar }}", "undefined variable 'foo' (line 1)"),
            ("{{ x ~ foo }}", "undefined variable 'foo' (line 1)"),
            ("{{ 'x' ~ bar }}", "undefined variable 'bar' (line 1)"),
            ("{{ foo | upper }}", "undefined variable 'foo' (line 1)"),
            ("{% for i in foo %}{% endfor %}", "undefined variable 'foo' (line 1)"),
            ("{% if foo %}{% endif %}", "undefined variable 'foo' (line 1)"),
            ("{% set y = foo %}{{ y }}", "undefined variable 'foo' (line 1)"),
            ("{{ x.bar }}", "undefined value 'x.bar' (line 1)"),
            ("{{ x[3] }}", "undefined value 'x[3]' (line 1)"),
            ("{{ x.__class__ }}", "undefined value 'x.__class__' (line 1)"),
            (
                "{{ range(n) }}",
                "invalid operation: cannot convert undefined to isize (undefined variable 'n') (line 1)",
            ),
        ];
        for (template, expected) in cases {
            assert_eq!(
                error_of(template, "x: {a: 1}", none),
                format!("template error: {expected}"),
                "{template}"
            );
        }
    }

    #[test]
    fn lines_are_the_users() {
        // The block cut out before line 2 of the body had 3 lines.
        let lines = LineMap {
            cut_at: 2,
            cut_lines: 3,
        };
        assert_eq!(
            error_of("{{ a }}\n", "", lines),
            "template error: undefined variable 'a' (line 1)"
        );
        assert_eq!(
            error_of("x\n{{ a }}\n", "", lines),
            "template error: undefined variable 'a' (line 5)"
        );
        assert_eq!(
            error_of("x\ny\n{{ \n", "", lines),
            "template error: syntax error: unexpected end of input, expected expression (line 6)"
        );
    }

    #[test]
    fn identifiers_skip_attributes_filters_tests_and_strings() {
        let found: Vec<&str> =
            identifiers("a.b | c(d=e) ~ 'f g' ~ h is i ~ j == k ~ 1e3 ~ \"l\\\"m\" ~ n").collect();
        // Keywords stay: they are never undeclared variables.
        assert_eq!(found, vec!["a", "e", "h", "is", "j", "k", "n"]);
        let parts: Vec<&str> = jinja_parts("x: {{ a }} and {% if b %} {{ c").collect();
        assert_eq!(parts, vec![" a ", " if b ", " c"]);
    }
}
