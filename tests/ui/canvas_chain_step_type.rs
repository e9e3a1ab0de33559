// A chain step whose first argument is not what the step before it returns does not
// compile: `cleanup_sessions` returns a `u64`, and `create_user` takes a `String` first.
use celerity::canvas::chain;

fn main() {
    let app = celerity::App::memory();
    let tasks = celerity_shop::tasks::TasksRegistry::new(app.client());
    let _workflow = chain(tasks.cleanup_sessions().s()).then(tasks.create_user_s());
}
