package grouping

// SetHooks sets the flush worker's test hooks.
func SetHooks(w *FlushWorker, before, completed func(FlushArgs)) {
	w.beforeFunc, w.completedFunc = before, completed
}
