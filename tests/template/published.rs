//! The template against Azure's published REST API specs: types and apiVersions, PUT
//! bodies, names.

use crate::{extracts, pattern, spec, template};
use std::collections::{BTreeMap, BTreeSet};

/// Every resource type and apiVersion the template uses is one Azure publishes: each has an
/// extract from a stable spec of Azure/azure-rest-api-specs listing a PUT for that type,
/// and no extract is left over from a type or version the template no longer uses.
#[test]
fn every_resource_type_and_api_version_is_in_the_published_specs() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &t.resources {
        if let Err(e) = spec::entry(&extracts, r) {
            errors.push(e);
        }
        used.entry(spec::extract_key(r)).or_default().insert(r.ty.clone());
    }
    for (key, extract) in &extracts {
        let api_version = extract["apiVersion"].as_str().unwrap_or_default();
        let sources = extract["sources"].as_array().cloned().unwrap_or_default();
        let own = sources.first().and_then(|s| s["path"].as_str()).unwrap_or_default();
        if !own.contains(&format!("/stable/{api_version}/")) {
            errors.push(format!("{key}: {own} is not the stable spec of {api_version}"));
        }
        for s in &sources {
            let commit = s["commit"].as_str().unwrap_or_default();
            if s["repository"] != "Azure/azure-rest-api-specs"
                || commit.len() != 40
                || !commit.chars().all(|c| c.is_ascii_hexdigit())
            {
                errors.push(format!("{key}: source {s} names no repository commit"));
            }
        }
        let types: BTreeSet<String> = extract["resourceTypes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        match used.get(key) {
            None => errors.push(format!("{key}: the template uses nothing from it")),
            Some(u) if *u != types => errors.push(format!("{key}: describes {types:?}, the template uses {u:?}")),
            _ => {}
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Each resource's body is what its PUT takes: required properties present, every property
/// one the spec has and not read-only, values (literal, or parameters and variables with
/// their allowed values) of the spec's type and among its enum values, recursively through
/// every object the template sets.
#[test]
fn resource_bodies_have_the_required_properties_of_the_right_types() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    for r in &t.resources {
        match spec::entry(&extracts, r) {
            Ok(entry) => errors.extend(spec::check_body(&t, r, entry)),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Resource names fit the name segments of their PUT paths: the right number of levels,
/// fixed segments (`default`) as the spec has them, literal names matching the spec's
/// pattern (the access policy assignment's `^[A-Za-z0-9]{1,60}$`), and name parameters
/// declaring lengths within the spec's.
#[test]
fn resource_names_follow_the_specs_name_rules() {
    let t = template();
    let extracts = extracts();
    let mut errors = Vec::new();
    for r in &t.resources {
        if let Ok(entry) = spec::entry(&extracts, r) {
            errors.extend(spec::check_name(&t, r, entry));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The name patterns are matched as the specs mean them (look-ahead, groups, classes), so
/// the name test above can fail.
#[test]
fn spec_name_patterns_match_as_the_specs_mean() {
    let cases = [
        ("^[A-Za-z0-9]{1,60}$", "funcapp", true),
        ("^[A-Za-z0-9]{1,60}$", "func-app", false),
        ("^[A-Za-z0-9]{1,60}$", "", false),
        ("^[A-Za-z0-9]{1,60}$", &"a".repeat(61), false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "redis-x1-y", true),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "default", true),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "a--b", false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "-a", false),
        ("^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", &"a".repeat(61), false),
        ("^[a-z0-9]+$", "st0abc", true),
        ("^[a-z0-9]+$", "St0abc", false),
        (r"^[-\w\._\(\)]+$", "my_rg-1.(x)", true),
        (r"^[-\w\._\(\)]+$", "my rg", false),
    ];
    for (p, text, want) in cases {
        assert_eq!(pattern::is_match(p, text), Ok(want), "{p} on {text:?}");
    }
}
