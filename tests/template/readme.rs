//! What the README's step-by-step `az` path sets up, read from its command lines, so the
//! template can be compared with it.

use std::collections::BTreeSet;

/// The lines of a `## heading` section (up to the next `## `), or of a `### heading`
/// subsection (up to the next `## ` or `### `).
pub fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no `{heading}`"))
        + 1;
    let level = heading.split(' ').next().unwrap_or("##");
    let body = &text[start + heading.len()..];
    let mut end = body.len();
    for (at, _) in body.match_indices('\n') {
        let line = &body[at + 1..];
        let next_level = line.split(' ').next().unwrap_or_default();
        if !next_level.is_empty() && next_level.chars().all(|c| c == '#') && next_level.len() <= level.len() {
            end = at;
            break;
        }
    }
    &text[start..start + heading.len() + end]
}

/// The `az` command lines of the ```sh blocks, continuations joined, each split into
/// words as a shell would (quotes removed, `$VAR` and `$(...)` kept as text).
pub fn az_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for block in text.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        for line in block.replace("\\\n", " ").lines() {
            let line = line.split("  #").next().unwrap_or_default().trim();
            if line.starts_with("az ") {
                out.push(words(line));
            }
        }
    }
    out
}

/// Shell-like word splitting, enough for the README's command lines.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), c) if c == q && depth == 0 => quote = None,
            (Some('"'), '$') if chars.get(i + 1) == Some(&'(') => {
                depth += 1;
                word.push_str("$(");
                i += 1;
            }
            (Some('"'), ')') if depth > 0 => {
                depth -= 1;
                word.push(')');
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The command's words after `az <group...>` whose prefix is `command`, if it is that
/// command.
pub fn is_command(words: &[String], command: &str) -> bool {
    let wanted: Vec<&str> = command.split(' ').collect();
    words.len() >= wanted.len() && words.iter().zip(&wanted).all(|(w, c)| w == c)
}

/// The value(s) after `--option`: the words up to the next `--option`.
pub fn option<'a>(words: &'a [String], name: &str) -> Vec<&'a str> {
    let Some(at) = words.iter().position(|w| w == name) else {
        return Vec::new();
    };
    words[at + 1..]
        .iter()
        .take_while(|w| !w.starts_with("--"))
        .map(String::as_str)
        .collect()
}

/// `perInstanceConcurrency=N` of every `az functionapp scale config set` line in the
/// README, in code blocks or inline code.
pub fn per_instance_concurrency(readme: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let joined = readme.replace("\\\n", " ");
    for line in joined.lines() {
        for (at, _) in line.match_indices("az functionapp scale config set") {
            let rest = &line[at..];
            let rest = rest.split('`').next().unwrap_or(rest);
            for word in words(rest) {
                if let Some(n) = word.strip_prefix("perInstanceConcurrency=") {
                    out.insert(n.parse().unwrap_or_else(|e| panic!("{word}: {e}")));
                }
            }
        }
    }
    out
}

/// The cells of a text's Markdown table rows (the separator row excluded).
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The names in `` `Name` `` spans of a text that start with `prefix`.
pub fn code_names(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.starts_with(prefix) && !span.is_empty() && span.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// The app settings of the `## Settings` table (first column).
pub fn settings_table(readme: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in section(readme, "## Settings").lines() {
        if let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) {
            out.extend(code_names(first, ""));
        }
    }
    out
}

/// Checkov check ids (`CKV_AZURE_35`, `CKV2_AZURE_1`) in a text.
pub fn checkov_ids(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("CKV") {
        let id: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if id.contains("_AZURE_") {
            out.insert(id);
        }
    }
    out
}
