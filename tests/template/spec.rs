//! The template's resources against the trimmed API specs in tests/data/arm/ (made by
//! extract.py from Azure/azure-rest-api-specs): the body each PUT takes, and the names.

use crate::expr::{self, Expr, Ty};
use crate::model::{Resource, Seg, Template};
use crate::pattern;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The extracts by `Provider@apiVersion`.
pub fn load_extracts(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("tests/data/arm") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("an extract");
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let key = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.insert(key, json);
        }
    }
    out
}

/// `Microsoft.Web@2025-03-01` for a resource.
pub fn extract_key(r: &Resource) -> String {
    let provider = r.ty.split('/').next().unwrap_or_default();
    format!("{provider}@{}", r.api_version)
}

/// The extract's entry for the resource's type, or why there is none.
pub fn entry<'a>(extracts: &'a BTreeMap<String, Value>, r: &Resource) -> Result<&'a Value, String> {
    let key = extract_key(r);
    let extract = extracts.get(&key).ok_or_else(|| {
        format!(
            "{}: no {key} extract: that apiVersion is not one whose spec was extracted \
             (tests/data/arm/README.md says how)",
            r.label()
        )
    })?;
    extract["resourceTypes"]
        .as_object()
        .and_then(|types| {
            types
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(&r.ty))
                .map(|(_, v)| v)
        })
        .ok_or_else(|| format!("{}: {key} has no PUT for {}", r.label(), r.ty))
}

/// Errors of one resource's body against its spec entry.
pub fn check_body(t: &Template, r: &Resource, entry: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(t, &entry["body"], &r.body(), &r.label(), &mut errors);
    errors
}

fn check(t: &Template, node: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if node["readOnly"] == true {
        errors.push(format!("{at}: read-only in the spec, the template sets it"));
        return;
    }
    if node.get("type").is_none() && node.get("ref").is_some() {
        errors.push(format!(
            "{at}: the extract does not describe {} (run tests/data/arm/extract.py)",
            node["ref"]
        ));
        return;
    }
    let spec_type = node["type"].as_str();
    if let Some(Ok(e)) = value.as_str().and_then(expr::parse_value) {
        check_expression(t, node, &e, at, errors);
        return;
    }
    if let Some(spec_type) = spec_type {
        if !Ty::of(value).fits(spec_type) {
            errors.push(format!("{at}: {value} is not {spec_type}"));
            return;
        }
    }
    check_enum(node, value, at, errors);
    match value {
        Value::Object(map) => {
            let props = node.get("properties").and_then(Value::as_object);
            let extra = node.get("additionalProperties");
            if props.is_none() && extra.is_none() {
                errors.push(format!(
                    "{at}: the extract does not list this object's properties \
                     (run tests/data/arm/extract.py)"
                ));
                return;
            }
            for required in node["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !map.contains_key(name) {
                    errors.push(format!("{at}: required property {name} is missing"));
                }
            }
            for (key, item) in map {
                let here = format!("{at}.{key}");
                match (props.and_then(|p| p.get(key)), extra) {
                    (Some(child), _) => check(t, child, item, &here, errors),
                    (None, Some(child)) => check(t, child, item, &here, errors),
                    (None, None) => errors.push(format!("{here}: no such property in the spec")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(t, &node["items"], item, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn check_expression(t: &Template, node: &Value, e: &Expr, at: &str, errors: &mut Vec<String>) {
    if let Some(spec_type) = node["type"].as_str() {
        let ty = t.ty(e);
        if !ty.fits(spec_type) {
            errors.push(format!(
                "{at}: the expression yields {ty:?}, the spec wants {spec_type}"
            ));
            return;
        }
    }
    if node.get("enum").is_some() {
        for value in t.possible_values(e).into_iter().flatten() {
            check_enum(node, &value, at, errors);
        }
    }
}

fn check_enum(node: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(allowed) = node["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
}

/// Errors of one resource's name against the name segments of its PUT path: their number,
/// and each literal segment (or a variable holding one) against the parameter's pattern,
/// lengths and allowed values. A segment taken from a template parameter must declare
/// lengths within the spec's.
pub fn check_name(t: &Template, r: &Resource, entry: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let specs = entry["nameSegments"].as_array().cloned().unwrap_or_default();
    if specs.len() != r.id.names.len() {
        errors.push(format!(
            "{}: {} name segments, the type has {}",
            r.label(),
            r.id.names.len(),
            specs.len()
        ));
        return errors;
    }
    for (seg, spec) in r.id.names.iter().zip(&specs) {
        match seg {
            Seg::Lit(text) => check_literal_name(text, spec, &r.label(), &mut errors),
            Seg::Expr(e) => {
                let Some(p) = e.parameter().and_then(|p| t.parameters().get(p)) else {
                    continue;
                };
                for key in ["minLength", "maxLength"] {
                    let Some(limit) = spec[key].as_u64() else {
                        continue;
                    };
                    let outside = match p[key].as_u64() {
                        None => true,
                        Some(v) if key == "minLength" => v < limit,
                        Some(v) => v > limit,
                    };
                    if outside {
                        errors.push(format!(
                            "{}: parameter {} must declare a {key} within the spec's {limit}",
                            r.label(),
                            e.parameter().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    errors
}

fn check_literal_name(text: &str, spec: &Value, label: &str, errors: &mut Vec<String>) {
    if let Some(literal) = spec["literal"].as_str() {
        if !literal.eq_ignore_ascii_case(text) {
            errors.push(format!("{label}: segment `{text}` must be `{literal}`"));
        }
        return;
    }
    let len = text.chars().count() as u64;
    if spec["minLength"].as_u64().is_some_and(|min| len < min)
        || spec["maxLength"].as_u64().is_some_and(|max| len > max)
    {
        errors.push(format!("{label}: `{text}` has a length outside the spec's"));
    }
    if let Some(allowed) = spec["enum"].as_array() {
        if !allowed.iter().any(|a| a.as_str() == Some(text)) {
            errors.push(format!("{label}: `{text}` is not one of {allowed:?}"));
        }
    }
    if let Some(p) = spec["pattern"].as_str() {
        match pattern::is_match(p, text) {
            Ok(true) => {}
            Ok(false) => errors.push(format!("{label}: `{text}` does not match {p}")),
            Err(e) => errors.push(format!("{label}: pattern {p}: {e}")),
        }
    }
}
