// A caller passing the wrong type for a task argument does not compile, whether the
// argument is required (a parameter of the client method) or has a default (a setter).
fn main() {
    let app = celerity::App::memory();
    let tasks = celerity_shop::tasks::TasksRegistry::new(app.client());
    let _call = tasks.create_user(42);
    let _call = tasks.cleanup_sessions().with_max_idle_minutes("thirty");
}
