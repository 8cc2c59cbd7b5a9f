import CascadeSeg
