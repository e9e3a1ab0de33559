// Registering a type that does not implement the component's worker trait does not compile.
struct NotAWorker;

impl celerity::Component for NotAWorker {
    type Deps = ();

    async fn build(_deps: (), _ctx: &celerity::TaskContext) -> Result<Self, celerity::BuildError> {
        Ok(NotAWorker)
    }
}

fn main() {
    let app = celerity::App::memory();
    let mut worker = app.worker();
    celerity_shop::tasks::register_orders::<NotAWorker>(&mut worker);
}
