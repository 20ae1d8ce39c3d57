//! Offline checks of infra/azuredeploy.json, the ARM template that deploys the whole app
//! (README: Deploy everything with one template): against Azure's published REST API specs
//! (trimmed extracts in tests/data/arm/, made by extract.py there), against itself
//! (references, dependencies), and against the README's step-by-step `az` path.
//!
//! What needs the network or a download stays outside: `.ci/check-template` runs the Azure
//! CLI's parser and checkov on the template.

mod app;
mod drift;
mod expr;
mod model;
mod pattern;
mod published;
mod readme;
mod spec;
mod wiring;

use expr::Expr;
use model::Template;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The repository; `TEMPLATE_TEST_ROOT` points the tests at a copy instead, which is how a
/// broken template or README is shown to fail them without touching the work tree.
fn root() -> PathBuf {
    std::env::var_os("TEMPLATE_TEST_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn template() -> Template {
    Template::load(&read("infra/azuredeploy.json"))
}

fn extracts() -> BTreeMap<String, Value> {
    spec::load_extracts(&root().join("tests/data/arm"))
}

/// The expression a template value holds; panics on a plain value.
fn expression(v: &Value) -> Expr {
    match v.as_str().and_then(expr::parse_value) {
        Some(Ok(e)) => e,
        _ => panic!("{v} is not an expression"),
    }
}

/// Whether `value` is `reference(<a resource of type ty>, ...).member`.
fn reference_to(t: &Template, value: &Value, ty: &str, member: &str) -> bool {
    let Some(Ok(Expr::Member(base, m))) = value.as_str().and_then(expr::parse_value) else {
        return false;
    };
    m == member
        && base
            .call("reference")
            .and_then(|args| t.referenced(args.first()?))
            .is_some_and(|i| t.resources[i].ty.eq_ignore_ascii_case(ty))
}

/// Whether `value` is `resourceId(...)` of the one resource of type `ty`.
fn id_of_the(t: &Template, value: &Value, ty: &str) -> bool {
    let Some(Ok(e)) = value.as_str().and_then(expr::parse_value) else {
        return false;
    };
    t.id_of(&e)
        .and_then(|(id, scope)| t.find(&id, scope.as_ref()))
        .is_some_and(|i| t.resources[i].ty.eq_ignore_ascii_case(ty))
}

/// The site's app settings by name.
fn app_settings(t: &Template) -> BTreeMap<String, Value> {
    let site = t.resource("Microsoft.Web/sites");
    site.json["properties"]["siteConfig"]["appSettings"]
        .as_array()
        .expect("appSettings")
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["value"].clone()))
        .collect()
}

/// The default of the parameter a value is `[parameters('x')]` of (`Null` for any other
/// value: the caller reports it).
fn parameter_default(t: &Template, value: &Value) -> Value {
    parameter_of(value)
        .and_then(|p| t.parameters().get(&p))
        .map_or(Value::Null, |p| p["defaultValue"].clone())
}

/// `x` for a value `[parameters('x')]`.
fn parameter_of(value: &Value) -> Option<String> {
    match value.as_str().and_then(expr::parse_value) {
        Some(Ok(e)) => e.parameter().map(String::from),
        _ => None,
    }
}

/// An expression back as ARM text.
fn render(e: &Expr) -> String {
    match e {
        Expr::Str(s) => format!("'{}'", s.replace('\'', "''")),
        Expr::Int(i) => i.to_string(),
        Expr::Call(name, args) => format!("{name}({})", args.iter().map(render).collect::<Vec<_>>().join(", ")),
        Expr::Member(base, m) => format!("{}.{m}", render(base)),
        Expr::Index(base, i) => format!("{}[{}]", render(base), render(i)),
    }
}

/// What a test expects, every miss reported at once.
#[derive(Default)]
struct Expect(Vec<String>);

impl Expect {
    fn that(&mut self, ok: bool, what: &str) {
        if !ok {
            self.0.push(what.to_string());
        }
    }

    fn done(self) {
        assert!(self.0.is_empty(), "{:#?}", self.0);
    }
}
