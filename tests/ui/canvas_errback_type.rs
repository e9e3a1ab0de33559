// An errback receives the failed task's id, a string: one whose first argument is
// another type (`cleanup_sessions` takes a `u32`) does not compile.
fn main() {
    let app = celerity::App::memory();
    let tasks = celerity_shop::tasks::TasksRegistry::new(app.client());
    let _signature = tasks.ping().s().link_error(tasks.cleanup_sessions_s());
}
