"""The losses: the center loss and SSD's multibox loss with the center term, per training mode."""
from .center import CenterLoss, CenterPush, class_histogram, sum_over_devices
from .multibox import LossTerms, Mode, MultiBoxCenterLoss

__all__ = ['CenterLoss', 'CenterPush', 'class_histogram', 'sum_over_devices', 'LossTerms', 'Mode',
           'MultiBoxCenterLoss']
