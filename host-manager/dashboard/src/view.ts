/** A view of the page: mounted into the main element, told when the store changed, unmounted when left. */
export interface View {
  mount(root: HTMLElement): void;
  update(): void;
  unmount(): void;
}
