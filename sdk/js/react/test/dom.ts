// A DOM for React in node's test runner: happy-dom's window, with the
// globals react-dom reads. Imported first by every test file. Updates are
// not wrapped in act(): the tests poll the DOM (or the hook's last result)
// with deadlines, as a user would see it.
import { Window } from 'happy-dom';

const win = new Window({ url: 'http://localhost/' });
const g = globalThis as Record<string, unknown>;
g.window = win;
g.document = win.document;
g.navigator = win.navigator;
for (const name of ['HTMLElement', 'HTMLIFrameElement', 'Element', 'Node', 'Event', 'MutationObserver']) {
  g[name] = (win as unknown as Record<string, unknown>)[name];
}
g.IS_REACT_ACT_ENVIRONMENT = false;

export { win };
