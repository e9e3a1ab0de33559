// A caller passing the wrong type for a task argument does not compile.
fn main() {
    let app = celerity::App::memory();
    let tasks = celerity_shop::tasks::TasksRegistry::new(app.client());
    let _call = tasks.cleanup_sessions("thirty", false);
}
