//! The Python module generated from a schema: dataclasses and enums for the named types,
//! a typed client (`TasksRegistry`) that sends each task through a Celery app, typed
//! results and signatures, and a worker (`TasksWorker`) that registers Python
//! implementations of the tasks. It imports only Celery and the standard library.

mod lower;
mod model;

use handlebars::Handlebars;

pub(crate) use lower::lower;
pub(crate) use model::PyModule;

use crate::render::RenderError;

const MODULE: &str = include_str!("../../templates/python.py.hbs");
/// The support code every generated module ends with (a partial without expressions).
const SUPPORT: &str = include_str!("../../templates/python_support.py.hbs");

/// Renders the Python model into the module's source.
pub(crate) fn render(module: &PyModule) -> Result<String, RenderError> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    for (name, text) in [("python", MODULE), ("python_support", SUPPORT)] {
        registry
            .register_template_string(name, text)
            .map_err(|e| RenderError {
                message: format!("template `{name}` is invalid: {e}"),
                raw: None,
            })?;
    }
    registry.render("python", module).map_err(|e| RenderError {
        message: format!("template `python` failed to render: {e}"),
        raw: None,
    })
}
